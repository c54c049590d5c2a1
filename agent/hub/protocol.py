"""Model hubs: where the meta-controller looks for small text classifiers.

`ModelHub` is what selection needs: list text-classification models with their labels and
cards, and look one up by id. Two hubs implement it: agent.hub.hf.HfHub asks the Hugging Face
Hub, agent.hub.local.LocalHub reads a folder of HF-format model dirs (how the tool works offline
and how tests run; agent.hub.demo builds one). Both read model cards and configs alike, with the
helpers here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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


# --- model cards and configs, as both hubs read them ------------------------------------------


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


def as_list(value: Any) -> list[str]:
    """A card field that may be missing, one value or a list, as a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def first(value: Any) -> str | None:
    """The first of such a field's values, or None."""
    items = as_list(value)
    return items[0] if items else None
