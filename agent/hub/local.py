"""A model hub in a local folder of HF-format classifier dirs: offline use, the demo and tests."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from agent.hub.protocol import (
    HEAD_CONFIG,
    TEXT_CLASSIFICATION,
    WEIGHT_SUFFIXES,
    HubError,
    ModelInfo,
    as_list,
    first,
    model_kind,
    model_labels,
    split_front_matter,
)

log = logging.getLogger(__name__)


def _pipeline_tag(meta: dict[str, Any], config: dict[str, Any]) -> str | None:
    """The card's pipeline_tag; cards that omit it still describe a classifier when the
    architecture is one (the Hub infers the tag the same way)."""
    if meta.get("pipeline_tag"):
        return str(meta["pipeline_tag"])
    architectures = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return TEXT_CLASSIFICATION
    return None


def _matches(info: ModelInfo, search: str | None) -> bool:
    if not search:
        return True
    needle = search.lower()
    haystack = [info.id, info.card, *info.tags]
    return any(needle in text.lower() for text in haystack)


class LocalHub:
    """A folder of HF-format classifier dirs: `org__name/` or `org/name/`, each with
    config.json (id2label), weights, tokenizer files and a README.md card; or another kind
    (agent.hub.protocol.model_kind) whose card and files say how it is used."""

    name = "local"

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise HubError(f"local hub folder {self.root} does not exist")

    def _model_dirs(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for config in sorted(self.root.glob("*/config.json")) + sorted(
            self.root.glob("*/*/config.json")
        ):
            model_dir = config.parent
            if (model_dir.parent / "config.json").is_file():
                continue  # a module inside a model (a sentence encoder's 1_Pooling/)
            relative = model_dir.relative_to(self.root).as_posix()
            found.setdefault(relative.replace("__", "/", 1), model_dir)
        return found

    def _read(self, model_id: str, model_dir: Path) -> ModelInfo:
        try:
            config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise HubError(f"{model_id}: unreadable config.json ({err})") from err
        card_path = model_dir / "README.md"
        card_text = card_path.read_text(encoding="utf-8") if card_path.exists() else ""
        meta, card = split_front_matter(card_text)
        weights = [p for p in model_dir.iterdir() if p.name.endswith(WEIGHT_SUFFIXES)]
        downloads = meta.get("downloads")
        files = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
        kind = model_kind(config, meta, files)
        head = {}
        if (model_dir / HEAD_CONFIG).is_file():
            try:
                head = json.loads((model_dir / HEAD_CONFIG).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise HubError(f"{model_id}: unreadable {HEAD_CONFIG} ({err})") from err
        return ModelInfo(
            id=model_id,
            source=str(model_dir),
            labels=model_labels(kind, config, meta, head if isinstance(head, dict) else {}),
            kind=kind,
            card=card,
            pipeline_tag=_pipeline_tag(meta, config),
            tags=as_list(meta.get("tags")),
            license=meta.get("license"),
            base_model=first(meta.get("base_model")),
            datasets=as_list(meta.get("datasets")),
            size_bytes=sum(p.stat().st_size for p in weights) if weights else None,
            downloads=int(downloads) if downloads is not None else None,
        )

    def list_models(self, search: str | None = None, limit: int = 50) -> list[ModelInfo]:
        models = []
        for model_id, model_dir in self._model_dirs().items():
            try:
                info = self._read(model_id, model_dir)
            except HubError as err:
                log.warning("skipping %s: %s", model_dir, err)
                continue
            if info.pipeline_tag == TEXT_CLASSIFICATION and _matches(info, search):
                models.append(info)
        models.sort(key=lambda m: (-(m.downloads or 0), m.id))
        return models[:limit]

    def model_info(self, model_id: str) -> ModelInfo:
        model_dir = self._model_dirs().get(model_id)
        if model_dir is None:
            raise HubError(f"no model {model_id!r} in local hub {self.root}")
        return self._read(model_id, model_dir)
