"""Model hubs: where the meta-controller looks for small text classifiers.

`ModelHub` is what selection needs: list text-classification models with their labels and
cards, and look one up by id. `HfHub` asks the Hugging Face Hub (honours HF_TOKEN and
HF_ENDPOINT through huggingface_hub); `LocalHub` reads a folder of HF-format model dirs,
which is how the tool works offline and how tests run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from agent.errors import UserError

log = logging.getLogger(__name__)

TEXT_CLASSIFICATION = "text-classification"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class HubError(UserError, LookupError):
    """A model the hub cannot provide: unknown id, not a classifier, unreadable config."""


@dataclass(frozen=True)
class ModelInfo:
    id: str  # "org/name", as on the Hugging Face Hub
    source: str  # what from_pretrained takes: a local dir (LocalHub) or a hub id (HfHub)
    labels: list[str]  # id2label in index order
    card: str  # model card text, front matter stripped
    pipeline_tag: str | None = None
    tags: list[str] = field(default_factory=list)
    license: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    size_bytes: int | None = None  # weights only
    downloads: int | None = None


class ModelHub(Protocol):
    name: str

    def list_models(self, search: str | None = None, limit: int = 50) -> list[ModelInfo]:
        """Text-classification models, most downloaded first."""
        ...

    def model_info(self, model_id: str) -> ModelInfo:
        """One model by id; raises HubError when the hub cannot provide it."""
        ...


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(YAML metadata, body) of a model card; cards without front matter give ({}, text)."""
    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        return {}, text
    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError:
        log.warning("model card front matter is not valid YAML; ignoring it")
        meta = {}
    body = text[end + len("\n---") :].lstrip("\n")
    return (meta if isinstance(meta, dict) else {}), body


def labels_from_config(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    if not id2label:
        raise HubError("config.json has no id2label")
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def _first(value: Any) -> str | None:
    items = _as_list(value)
    return items[0] if items else None


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
    config.json (id2label), weights, tokenizer files and a README.md card."""

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
        return ModelInfo(
            id=model_id,
            source=str(model_dir),
            labels=labels_from_config(config),
            card=card,
            pipeline_tag=_pipeline_tag(meta, config),
            tags=_as_list(meta.get("tags")),
            license=meta.get("license"),
            base_model=_first(meta.get("base_model")),
            datasets=_as_list(meta.get("datasets")),
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


class HfHub:
    """The Hugging Face Hub through huggingface_hub: search, then config.json and README.md
    of each hit (both land in the huggingface_hub cache, so repeated lookups are free)."""

    name = "huggingface"

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | bool | None = None,  # False: never send a token
        cache_dir: Path | str | None = None,
    ):
        from huggingface_hub import HfApi  # noqa: PLC0415 - reads HF_HUB_* once, at import: after the CLI set them

        self.endpoint = endpoint  # None: huggingface_hub reads HF_ENDPOINT itself
        self.token = token
        self.cache_dir = cache_dir
        self._api = HfApi(endpoint=self.endpoint, token=token)

    def _download_text(self, model_id: str, filename: str, revision: str | None) -> str | None:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - reads HF_HUB_* once, at import: after the CLI set them
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError  # noqa: PLC0415 - reads HF_HUB_* once, at import: after the CLI set them

        try:
            path = hf_hub_download(
                model_id,
                filename,
                revision=revision,
                endpoint=self.endpoint,
                token=self.token,
                cache_dir=self.cache_dir,
            )
        except EntryNotFoundError:
            return None
        except HfHubHTTPError as err:
            raise HubError(f"{model_id}/{filename}: {err}") from err
        return Path(path).read_text(encoding="utf-8")

    def _to_model_info(self, hf_info: Any) -> ModelInfo:
        config_text = self._download_text(hf_info.id, "config.json", hf_info.sha)
        if config_text is None:
            raise HubError(f"{hf_info.id}: no config.json")
        meta, card = split_front_matter(
            self._download_text(hf_info.id, "README.md", hf_info.sha) or ""
        )
        card_data = hf_info.card_data.to_dict() if hf_info.card_data is not None else meta
        sizes = [
            s.size
            for s in hf_info.siblings or []
            if s.rfilename.endswith(WEIGHT_SUFFIXES) and s.size is not None
        ]
        return ModelInfo(
            id=hf_info.id,
            source=hf_info.id,
            labels=labels_from_config(json.loads(config_text)),
            card=card,
            pipeline_tag=hf_info.pipeline_tag,
            tags=list(hf_info.tags or []),
            license=card_data.get("license"),
            base_model=_first(card_data.get("base_model")),
            datasets=_as_list(card_data.get("datasets")),
            size_bytes=sum(sizes) if sizes else None,
            downloads=hf_info.downloads,
        )

    def list_models(self, search: str | None = None, limit: int = 50) -> list[ModelInfo]:
        hits = self._api.list_models(
            pipeline_tag=TEXT_CLASSIFICATION,
            search=search,
            sort="downloads",
            limit=limit,
            full=True,
            cardData=True,
        )
        models = []
        for hit in hits:
            try:
                models.append(self._to_model_info(hit))
            except HubError as err:
                log.warning("skipping %s: %s", hit.id, err)
        return models

    def model_info(self, model_id: str) -> ModelInfo:
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError  # noqa: PLC0415 - reads HF_HUB_* once, at import: after the CLI set them

        try:
            hf_info = self._api.model_info(model_id, files_metadata=True)
        except RepositoryNotFoundError as err:
            raise HubError(f"no model {model_id!r} on {self._api.endpoint}") from err
        except HfHubHTTPError as err:
            raise HubError(f"{model_id}: {err}") from err
        return self._to_model_info(hf_info)
