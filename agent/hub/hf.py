"""The Hugging Face Hub as a model hub, through huggingface_hub (honours HF_TOKEN and
HF_ENDPOINT)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from agent.domain import ModelKind
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
        siblings = hf_info.siblings or []
        sizes = [
            s.size for s in siblings if s.rfilename.endswith(WEIGHT_SUFFIXES) and s.size is not None
        ]
        config = _json_object(hf_info.id, "config.json", config_text)
        # The same reading of the repository's files as a local folder's (LocalHub), so a
        # SetFit-style encoder with a head or a multi-label model is found as its kind.
        kind = model_kind(config, card_data, {s.rfilename for s in siblings})
        head = {}
        if kind == ModelKind.EMBEDDING_HEAD:
            head_text = self._download_text(hf_info.id, HEAD_CONFIG, hf_info.sha)
            head = _json_object(hf_info.id, HEAD_CONFIG, head_text) if head_text else {}
        return ModelInfo(
            id=hf_info.id,
            source=hf_info.id,
            labels=model_labels(kind, config, card_data, head),
            kind=kind,
            card=card,
            pipeline_tag=hf_info.pipeline_tag,
            tags=list(hf_info.tags or []),
            license=card_data.get("license"),
            base_model=first(card_data.get("base_model")),
            datasets=as_list(card_data.get("datasets")),
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


def _json_object(model_id: str, filename: str, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HubError(f"{model_id}/{filename}: not JSON ({err})") from err
    if not isinstance(data, dict):
        raise HubError(f"{model_id}/{filename}: not a JSON object")
    return data
