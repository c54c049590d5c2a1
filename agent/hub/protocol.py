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

from agent.domain import ModelKind
from agent.errors import UserError

log = logging.getLogger(__name__)

TEXT_CLASSIFICATION = "text-classification"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx")
# A SetFit-style model: a sentence encoder and, beside it, its head and the head's labels.
HEAD_CONFIG = "config_setfit.json"
HEAD_PREFIX = "model_head."
# Card metadata naming the labels a multi-label model's decision takes (its card's prose says
# how: "toxic when any head's sigmoid is at least 0.5"); the heads themselves are id2label.
DECISION_LABELS = "decision_labels"


class HubError(UserError, LookupError):
    """A model the hub cannot provide: unknown id, not a classifier, unreadable config."""


@dataclass(frozen=True)
class ModelInfo:
    id: str  # "org/name", as on the Hugging Face Hub
    source: str  # what from_pretrained takes: a local dir (LocalHub) or a hub id (HfHub)
    labels: list[str]  # what its votes are: id2label in index order, unless `kind` says
    card: str  # model card text, front matter stripped
    pipeline_tag: str | None = None
    tags: list[str] = field(default_factory=list)
    license: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    size_bytes: int | None = None  # weights only
    downloads: int | None = None
    kind: ModelKind = ModelKind.SEQUENCE_CLASSIFICATION  # how it runs (agent.domain.ModelKind)


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


def model_kind(config: dict[str, Any], meta: dict[str, Any], files: set[str]) -> ModelKind:
    """What a model folder holds, by its file names, config and card metadata.

    A multi-label config whose card does not say how its heads decide stays a sequence
    classifier: selection's smoke test then rejects it as multi-label."""
    names = {name.rsplit("/", 1)[-1] for name in files}
    if any(n.endswith(".onnx") for n in names) and not any(
        n.endswith((".safetensors", ".bin")) for n in names
    ):
        return ModelKind.ONNX
    if HEAD_CONFIG in names or any(n.startswith(HEAD_PREFIX) for n in names):
        return ModelKind.EMBEDDING_HEAD
    if config.get("problem_type") == "multi_label_classification" and meta.get(DECISION_LABELS):
        return ModelKind.MULTI_LABEL
    return ModelKind.SEQUENCE_CLASSIFICATION


def model_labels(
    kind: ModelKind, config: dict[str, Any], meta: dict[str, Any], head: dict[str, Any]
) -> list[str]:
    """The labels a model's votes take: the card's decision labels for a multi-label model,
    the head's labels (config_setfit.json) for an encoder with a head, else id2label."""
    if kind == ModelKind.MULTI_LABEL:
        return as_list(meta[DECISION_LABELS])
    if kind == ModelKind.EMBEDDING_HEAD:
        labels = as_list(head.get("labels"))
        if not labels:
            raise HubError(f"{HEAD_CONFIG} names no labels")
        return labels
    return labels_from_config(config)


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
