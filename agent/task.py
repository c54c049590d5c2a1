"""TaskSpec: what the user asked for, validated once, saved as task.json."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PAPER_BETA = 2000
# Labeled rows of the run the reviewer LLM sees before each sample, in the fixed layout. 16
# against 8, 300 rows each, bundled 1.5B model, drafted label meanings, lean divided out
# (bench/review_quality.py both16 vs both): macro-F1 76.2 vs 73.8 on financial news (bullish
# recall 55 vs 48), 66.3 vs 65.8 on tweets, 80.0 vs 79.3 on toxicity, at the same seconds per
# sample (the examples are a prompt prefix the local server evaluates once).
DEFAULT_REVIEW_SHOTS = 16


def parse_label_map(items: Iterable[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """`--label-map` values as (shared map, per-model maps); a malformed item raises ValueError.

    Each comma-separated item is `MODEL_LABEL=TASK_LABEL`, for every model with that label, or
    `MODEL_ID:MODEL_LABEL=TASK_LABEL`, for that model only (a hub id has no colon)."""
    shared: dict[str, str] = {}
    per_model: dict[str, dict[str, str]] = {}
    for group in items:
        for item in filter(None, (part.strip() for part in group.split(","))):
            left, sep, task_label = (x.strip() for x in item.partition("="))
            model_id, colon, model_label = (x.strip() for x in left.partition(":"))
            if not colon:
                model_id, model_label = "", left
            if not sep or not model_label or not task_label or (colon and not model_id):
                raise ValueError(
                    f"--label-map takes MODEL_LABEL=TASK_LABEL or MODEL_ID:MODEL_LABEL=TASK_LABEL, "
                    f"not {item!r}"
                )
            (per_model.setdefault(model_id, {}) if model_id else shared)[model_label] = task_label
    return shared, per_model


def format_label_map(task: TaskSpec) -> str:
    """The user's label map as it is typed: `negative=bearish,org/m:LABEL_0=bullish`."""
    items = [f"{k}={v}" for k, v in task.label_map.items()]
    for model_id, mapping in task.model_label_maps.items():
        items += [f"{model_id}:{k}={v}" for k, v in mapping.items()]
    return ",".join(items)


class TaskSpec(BaseModel):
    """A labeling job. ε defaults to 1/k, which routes every disagreement (the paper's setting)."""

    # A task.json may hold fields this version no longer has (`device`, which said nothing a
    # run read: the device is an option of each command); they are ignored, not refused.
    model_config = ConfigDict(extra="ignore")

    description: str = Field(min_length=3, description="what to label, in plain words")
    labels: list[str]
    label_descriptions: dict[str, str] = Field(default_factory=dict)
    # Without --label-desc the reviewer LLM drafts label_descriptions once per run (saved here,
    # `label_descriptions_drafted` true); False: the reviewer sees the label names alone.
    draft_label_descriptions: bool = True
    label_descriptions_drafted: bool = False
    # Words the reviewer LLM is shown instead of a label (bearish -> negative), mapped back.
    label_words: dict[str, str] = Field(default_factory=dict)
    # What a model's label means, as the user said it (--label-map negative=bearish): model
    # label -> task label, for every model with that label, over any automatic mapping;
    # model_label_maps: the same for one model id (MODEL_ID:LABEL_0=bearish), over label_map.
    label_map: dict[str, str] = Field(default_factory=dict)
    model_label_maps: dict[str, dict[str, str]] = Field(default_factory=dict)
    data_path: str
    text_column: str = "text"
    id_column: str | None = None
    gold_column: str | None = None  # known labels, for `eval` and the oracle reviewer
    # Share of the gold rows the run learns from (source `gold`, never relabeled, evidence for
    # every reliability estimate); the rest only score it. `run --gold-column`: all of them.
    gold_evidence: float = Field(default=0.0, ge=0, le=1)
    # Share of the rows the committee agreed on that the reviewer labels too (capped per
    # chunk), so its reliability is measured where the truth is likely, not only on hard rows.
    audit_share: float = Field(default=0.05, ge=0, le=1)
    # Rows whose calibrated confidence is below this go to needs_review.csv, not labels.*.
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    k: int = Field(default=3, ge=1, le=9)
    epsilon: float | None = Field(default=None, gt=0, le=1)
    # Which rows go to the reviewer: `uncertainty`, the paper's U(x) >= ε; `gain`, rows whose
    # expected gain in accuracy from one reviewer answer (its measured confusion matrix against
    # the committee's distribution) is at least min_gain — the paper's rule until the reviewer
    # has answered a chunk; `margin`, of each chunk's rows the paper's rule routes, the
    # margin_share whose committee distribution has the narrowest lead of its top label over
    # the next. Within a budget the rows with the largest gain (margin routing: the narrowest
    # margin) go first. Measured (README, "Routing by margin"): 60% of the paper's calls at
    # the same tweets accuracy; 2 points less on financial news, where reviews are worth more.
    # A share, not a margin: how wide a margin is depends on the committee's models.
    routing: Literal["uncertainty", "gain", "margin"] = "uncertainty"
    min_gain: float = Field(default=0.05, ge=0, le=1)
    margin_share: float = Field(default=0.6, gt=0, le=1)
    beta: int = Field(default=PAPER_BETA, ge=1)
    # The first chunk's size; later chunks are sized so the hard pool reaches β at their end.
    chunk_size: int = Field(default=1000, ge=1)
    reviewer: str = "llm"  # llm | human | oracle:COLUMN | none
    # auto: each model's verified template, the LLM only where a template fails its probe;
    # llm: the LLM writes every role's script (the paper's setting); template: never the LLM.
    codegen: Literal["auto", "llm", "template"] = "auto"
    batch_size: int = Field(default=64, ge=1)
    max_length: int = Field(default=128, ge=8, le=4096)
    finetune_lr: float = 2e-5
    finetune_weight_decay: float = 0.01
    finetune_epochs: int = Field(default=3, ge=1)
    # Confident committee rows replayed per reviewed hard sample when fine-tuning, so an SLM
    # learns the hard cases without forgetting the easy ones; 0 trains on hard samples only.
    replay_ratio: float = Field(default=1.0, ge=0, le=10)
    seed: int = 42
    review_batch: Literal["auto"] | int = Field(default="auto", description="samples per LLM call")
    # Labeled rows of the run shown to the reviewer LLM before each sample; 0: none.
    review_shots: int = Field(default=DEFAULT_REVIEW_SHOTS, ge=0, le=32)
    # The same typical examples before every sample (one prompt prefix the server evaluates
    # once), or each sample's nearest (agent.pipeline.shots.Layout).
    review_shot_layout: Literal["fixed", "nearest"] = "fixed"
    # Ask the endpoint for the answer tokens' log-probs: a probability per label per verdict.
    review_probabilities: bool = True
    # Divide the reviewer's mean distribution (its lean to some labels, estimated from its own
    # answers, no gold) out of each answer's probabilities (agent.committee.bias): financial
    # news macro-F1 55 -> 73, tweets 64 -> 67 on the same answers. Needs the probabilities.
    review_debias: bool = True
    # Ask an answer whose own probability is below this once more, with the committee's votes
    # shown as a hint (agent.pipeline.review.LLMReviewer.self_check); None or 0: never. Off by
    # default: on the demo's reviewed rows it took the 1.5B model from 53.6% to 52.3% (P 0.6)
    # and 48.1% (P 0.8) accurate (bench/review_self_check.py; README, "Self-check").
    review_self_check: float | None = Field(default=None, ge=0, le=1)
    # Send each chunk's review requests as one job through the endpoint's Batch API (half the
    # price on OpenAI, answered within 24 h) instead of call by call (agent.llm.batch).
    review_batch_api: bool = False
    max_llm_calls: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    # USD per 1M tokens; None: free on the local server, else agent.llm.pricing.DEFAULT_PRICES
    price_in: float | None = Field(default=None, ge=0)
    price_out: float | None = Field(default=None, ge=0)

    @field_validator("labels")
    @classmethod
    def _labels_are_a_set(cls, labels: list[str]) -> list[str]:
        labels = [label.strip() for label in labels]
        # "positive, ,negative" is a typo, not two labels: dropping the blank hid it.
        blank = [number for number, label in enumerate(labels, 1) if not label]
        if blank:
            raise ValueError(
                f"label {blank[0]} of {len(labels)} is empty; remove the extra comma from --labels"
            )
        if len(labels) < 2:
            raise ValueError("give at least 2 labels, e.g. --labels positive,negative")
        duplicates = sorted({x for x in labels if labels.count(x) > 1})
        if duplicates:
            raise ValueError(f"duplicate labels: {', '.join(duplicates)}; list each label once")
        return labels

    @field_validator("reviewer")
    @classmethod
    def _known_reviewer(cls, reviewer: str) -> str:
        if reviewer in ("llm", "human", "none"):
            return reviewer
        if reviewer.startswith("oracle:") and len(reviewer) > 7:
            return reviewer
        raise ValueError(f"unknown reviewer {reviewer!r}; use llm, human, none or oracle:COLUMN")

    @field_validator("review_batch")
    @classmethod
    def _positive_batch(cls, batch: str | int) -> str | int:
        if batch != "auto" and batch < 1:
            raise ValueError("review batch is auto or a number of samples per call, at least 1")
        return batch

    @model_validator(mode="after")
    def _label_descriptions_known(self) -> TaskSpec:
        unknown = set(self.label_descriptions) - set(self.labels)
        if unknown:
            raise ValueError(f"descriptions for unknown labels: {', '.join(sorted(unknown))}")
        unknown = set(self.label_words) - set(self.labels)
        if unknown:
            raise ValueError(f"label words for unknown labels: {', '.join(sorted(unknown))}")
        shown: dict[str, str] = {}
        for label in self.labels:
            word = self.label_words.get(label, label).strip()
            if not word:
                raise ValueError(f"the label word for {label} is empty")
            other = shown.setdefault(word.casefold(), label)
            if other != label:
                raise ValueError(
                    f"{other} and {label} would both be shown to the LLM as {word!r}; "
                    "give them different --label-words"
                )
        maps = [("", self.label_map)] + [(f"{m}:", v) for m, v in self.model_label_maps.items()]
        for prefix, mapping in maps:
            for model_label, task_label in mapping.items():
                if task_label not in self.labels:
                    raise ValueError(
                        f"--label-map {prefix}{model_label}={task_label}: {task_label!r} is not "
                        f"one of the labels ({', '.join(self.labels)})"
                    )
        if (self.price_in is None) != (self.price_out is None):
            raise ValueError("give both --price-in and --price-out (USD per 1M tokens)")
        return self

    def label_map_for(self, model_id: str) -> dict[str, str]:
        """The user's label map for one model: the shared map, then that model's own."""
        return {**self.label_map, **self.model_label_maps.get(model_id, {})}

    @property
    def routing_threshold(self) -> float:
        return self.epsilon if self.epsilon is not None else 1.0 / self.k

    @property
    def oracle_column(self) -> str | None:
        return self.reviewer.split(":", 1)[1] if self.reviewer.startswith("oracle:") else None

    @property
    def gold_source(self) -> str | None:
        return self.oracle_column or self.gold_column

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> TaskSpec:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
