"""The vocabulary: label sources, routes, script roles, LLM call purposes, the committee's
members, progress events.

They are string enums, so they are written to parquet, JSON and the ledger as the plain strings
they always were, compare equal to those strings, and files of older runs read back unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10
    from backports.strenum import StrEnum


class Source(StrEnum):
    """Where a row's label came from (labels.parquet `source`, hard/<chunk>.parquet `source`)."""

    COMMITTEE = "committee"  # the SLMs' vote, not routed to review
    LLM = "llm"  # the LLM reviewer
    ORACLE = "oracle"  # gold labels standing in for a reviewer (eval, --reviewer oracle:COL)
    HUMAN = "human"  # a person in the review console
    NEEDS_HUMAN = "needs_human"  # routed, but the reviewer had no usable answer
    UNREVIEWED = "unreviewed"  # routed with review off (--reviewer none, or human not yet)
    CAPPED = "committee-capped"  # over the LLM budget: the committee's label stays, never trains
    SKIPPED = "skipped"  # an empty text: nothing to label
    GOLD = "gold"  # the user's own label (--gold-column): kept, and evidence for the estimate


# Sources whose label is an expert's answer: what fine-tuning learns from.
EXPERT_SOURCES = (Source.LLM, Source.ORACLE, Source.HUMAN)
# Sources whose label is taken as true: they anchor every reliability estimate.
KNOWN_SOURCES = (Source.GOLD, Source.ORACLE, Source.HUMAN)
# Rows no expert has labeled: review was off, unsure, or over budget.
NEEDS_HUMAN = (Source.NEEDS_HUMAN, Source.UNREVIEWED, Source.CAPPED)


# labels.parquet / labels.csv: the user's columns exactly as given, then the run's own, each
# named with this prefix so it never overwrites one of theirs (a user column with one of these
# names is refused before the run starts).
OUTPUT_PREFIX = "aa_"
OUTPUT_COLUMNS = (
    "id",  # --id-column's value, else the row's position (0-based) in the input
    "label",
    "source",
    "confidence",
    "reviewer_label",
    "uncertainty",
    "votes",
    "chunk",
    "truncated",
)


def output_name(column: str) -> str:
    """The name of the run's column `column` in labels.*: `label` -> `aa_label`."""
    return OUTPUT_PREFIX + column


class Routing(StrEnum):
    """Which voted rows go to review (`--routing`)."""

    UNCERTAINTY = "uncertainty"  # the paper's rule: U(x) >= epsilon
    GAIN = "gain"  # one reviewer answer is expected to change the label (trust.expected_gain)
    # The paper's rows whose committee distribution has the narrowest lead of its top label
    # over the next (trust.top_two_margin), a share of them: a wide lead is rarely overturned.
    MARGIN = "margin"


class ShotLayout(StrEnum):
    """Which labeled rows the reviewer sees before a sample (`--review-shot-layout`)."""

    # The same label-balanced set before every sample of a chunk: the prompt up to the sample
    # is the same each time, so a llama.cpp server evaluates it once, not once per sample.
    FIXED = "fixed"
    # Each sample's own nearest rows: closer examples, but a new prompt prefix for every sample.
    NEAREST = "nearest"


class Route(StrEnum):
    """Where the committee sends a row (eq. 5): keep its vote, or ask a reviewer."""

    DIRECT = "direct"
    REVIEW = "review"


class Role(StrEnum):
    """The three generated scripts (agent.scripts.contract)."""

    DEPLOY = "deploy"
    ANNOTATE = "annotate"
    FINETUNE = "finetune"


class Purpose(StrEnum):
    """Why the LLM was called: the ledger's `purpose`; the budget caps the review ones."""

    REVIEW = "review"
    REVIEW_BATCH = "review-batch"
    REVIEW_RETRY = "review-retry"
    REVIEW_SELF_CHECK = "review-self-check"  # an unsure answer asked again with the votes shown
    LABEL_MAP = "label-map"
    LABEL_DESCRIPTIONS = "label-descriptions"  # drafting what each label means, once per run
    CODEGEN_DEPLOY = "codegen-deploy"
    CODEGEN_ANNOTATE = "codegen-annotate"
    CODEGEN_FINETUNE = "codegen-finetune"


class ModelKind(StrEnum):
    """How a hub model is run: what its folder holds, which decides whether the jinja2
    templates (an AutoModelForSequenceClassification with id2label, softmax) can run it."""

    SEQUENCE_CLASSIFICATION = "sequence-classification"  # the templates' kind
    MULTI_LABEL = "multi-label"  # independent sigmoid heads; the card says how to decide
    EMBEDDING_HEAD = "embedding-head"  # a sentence encoder with a classifier head beside it
    ONNX = "onnx"  # an ONNX export and its tokenizer, no PyTorch weights


# --- the committee ------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitteeMember:
    """One SLM of the committee, as models.json's `models` list records it: written by
    selection (agent.committee.selection.Candidate.to_json), `inverse_label_map` added by the
    align_labels node.

    `from_dict` and `to_dict` keep that file plain JSON, as it always was: the fields the
    pipeline reads are typed here; the rest of selection's record (scores, licence, size, the
    smoke test) travels unread in `record`, so a file read and written back keeps every key.
    """

    id: str  # the hub's id, "org/name"
    slug: str  # the id as a directory name, "org__name": models/, votes/, scripts/
    source: str  # what deploy loads: a local model directory or a hub id
    labels: list[str]  # the model's own labels, in id2label order
    label_map: dict[str, str | None] = field(default_factory=dict)  # model label -> task label
    label_evidence: dict[str, str] = field(default_factory=dict)  # model label -> how mapped
    # Task label -> model label, what fine-tuning trains on; None until align_labels has run.
    inverse_label_map: dict[str, str] | None = None
    # Share of selection's smoke-test rows the whole committee would route to review.
    expected_escalation: float | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> ModelKind:
        """What selection recorded from the hub; runs from before kinds existed had one."""
        return ModelKind(self.record.get("kind", ModelKind.SEQUENCE_CLASSIFICATION))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CommitteeMember:
        return cls(
            id=data["id"],
            slug=data["slug"],
            source=data["source"],
            labels=list(data["labels"]),
            label_map=dict(data.get("label_map") or {}),
            label_evidence=dict(data.get("label_evidence") or {}),
            inverse_label_map=(
                dict(data["inverse_label_map"])
                if data.get("inverse_label_map") is not None
                else None
            ),
            expected_escalation=data.get("expected_escalation"),
            record={k: v for k, v in data.items() if k not in _TYPED},
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "id": self.id,
            "slug": self.slug,
            "source": self.source,
            "labels": list(self.labels),
            "label_map": dict(self.label_map),
            "label_evidence": dict(self.label_evidence),
            **self.record,
            "expected_escalation": self.expected_escalation,
        }
        if self.inverse_label_map is not None:  # absent, as before align_labels wrote it
            data["inverse_label_map"] = dict(self.inverse_label_map)
        return data


_TYPED = {f.name for f in fields(CommitteeMember)} - {"record"}


# --- progress events: what the nodes report; the CLI decides how to show each kind ----------


@dataclass(frozen=True)
class Selected:
    models: list[str]
    expected_escalation: float | None  # share of a smoke-test sample the committee routes
    considered: int | None = None  # hub models selection looked at (None: a run before it said)
    seconds: float | None = None  # selection's wall time, learning label maps included


@dataclass(frozen=True)
class LabelsDescribed:
    """The meaning of each label the reviewer LLM is shown, drafted by the LLM (saved in
    task.json, where a person may correct it)."""

    descriptions: dict[str, str]
    path: str  # the task.json they are saved in


@dataclass(frozen=True)
class ReviewEstimated:
    estimate: Any  # agent.pipeline.review.ReviewEstimate, before any review is paid for


@dataclass(frozen=True)
class Aligned:
    maps: dict[str, dict[str, str]]  # model id -> its label map
    # model id -> model label -> how it was mapped ("user": the user's --label-map)
    evidence: dict[str, dict[str, str]] = field(default_factory=dict)
    # model id -> what its map was learned from (models.json's learned_map: teacher, rows,
    # agreement, chance, kappa, matrix), for the models whose map was learned
    learned: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class CodegenAttempt:
    role: str
    attempt: int
    stage: str | None  # where the attempt was rejected; None when it passed


@dataclass(frozen=True)
class CodegenPlanned:
    """The LLM is about to write a script: for which role and models, why, and how long an
    attempt should take at the endpoint's measured speed (None before any call is measured)."""

    role: str
    models: list[str]
    why: str
    expected_tokens: int  # about the size of the worked example it is shown
    tokens_per_s: float | None
    max_attempts: int


@dataclass(frozen=True)
class Deployed:
    model: str


@dataclass(frozen=True)
class Dropped:
    """A committee member left out of the run: no script for it passed its checks."""

    model: str
    reason: str
    remaining: int  # members that go on


@dataclass(frozen=True)
class Annotating:
    chunk: int
    rows: int
    n_chunks: int  # re-estimated as the chunk sizes adapt to the escalation


@dataclass(frozen=True)
class Voted:
    chunk: int
    rows: int
    hard: int


@dataclass(frozen=True)
class Reviewing:
    chunk: int


@dataclass(frozen=True)
class ReviewProgress:
    chunk: int
    done: int
    total: int


@dataclass(frozen=True)
class Reviewed:
    chunk: int
    hard: int
    expert: int


@dataclass(frozen=True)
class FinetuneStarted:
    cycle: int
    samples: int


@dataclass(frozen=True)
class Finetuned:
    cycle: int
    models: dict[str, dict]  # slug -> gate scores, kept, train seconds, peak memory
    skipped: str | None = None  # why the cycle did not run (the trust stage stood it down)


@dataclass(frozen=True)
class Reported:
    metrics: dict


Event = (
    Selected | LabelsDescribed | ReviewEstimated | Aligned | CodegenPlanned | CodegenAttempt
    | Deployed | Dropped | Annotating | Voted | Reviewing | ReviewProgress | Reviewed
    | FinetuneStarted | Finetuned | Reported
)  # fmt: skip
Progress = Callable[[Event], None]
