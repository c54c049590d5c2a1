"""The vocabulary: label sources, routes, script roles, LLM call purposes, progress events.

They are string enums, so they are written to parquet, JSON and the ledger as the plain strings
they always were, compare equal to those strings, and files of older runs read back unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
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
    LABEL_MAP = "label-map"
    CODEGEN_DEPLOY = "codegen-deploy"
    CODEGEN_ANNOTATE = "codegen-annotate"
    CODEGEN_FINETUNE = "codegen-finetune"


# --- progress events: what the nodes report; the CLI decides how to show each kind ----------


@dataclass(frozen=True)
class Selected:
    models: list[str]
    expected_escalation: float | None  # share of a smoke-test sample the committee routes


@dataclass(frozen=True)
class ReviewEstimated:
    estimate: Any  # agent.pipeline.review.ReviewEstimate, before any review is paid for


@dataclass(frozen=True)
class Aligned:
    maps: dict[str, dict[str, str]]  # model id -> its label map


@dataclass(frozen=True)
class CodegenAttempt:
    role: str
    attempt: int
    stage: str | None  # where the attempt was rejected; None when it passed


@dataclass(frozen=True)
class Deployed:
    model: str


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
    Selected | ReviewEstimated | Aligned | CodegenAttempt | Deployed | Annotating | Voted
    | Reviewing | ReviewProgress | Reviewed | FinetuneStarted | Finetuned | Reported
)  # fmt: skip
Progress = Callable[[Event], None]
