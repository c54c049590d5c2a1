"""Label alignment: map a model's id2label onto the task's labels, then check the map on probes.

Order of evidence: first what the user said (`--label-map negative=bearish`: model label ->
task label, over everything below); the model's label equals a task label, or the word a task
label is shown to the LLM as (`--label-words bearish=negative`: a model label `negative` is
bearish); a known synonym of either (POS -> positive); for generic names (LABEL_0) the card's
own mapping ("LABEL_0: negative"); last, for whatever is still unmapped, a proposal from a
caller-supplied function (an LLM). Many-to-one is fine
(1-5 stars onto three sentiments) and is written into the evidence. A model is usable only
when every one of its labels maps to a task label and every task label is reachable, so its
votes are always in the task's space.

A map that reads well can still be wrong (a card that swaps LABEL_0 and LABEL_2, an LLM
guess), so `check_probes` compares the mapped predictions on texts whose label is obvious
with that label and flags what disagrees. And where a map rests on more than names (a card, a
guess, nothing at all) and someone can label a few of the user's rows (gold rows, the
reviewer), `learn_map` replaces it with the map those rows support: the assignment of model
labels to task labels that maximises agreement on the confusion matrix
(scipy's linear_sum_assignment; a model label left over when the model has more labels than
the task goes to the task label it agrees with most), kept only when that agreement beats
the agreement expected by chance from the two label distributions (Cohen's kappa) and what
the best map of the teacher's answers shuffled reaches (a permutation p-value).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
from langchain_core.messages import HumanMessage, SystemMessage
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import cohen_kappa_score

from agent.domain import Purpose
from agent.prompting import escape_tag, load_prompt

log = logging.getLogger(__name__)

# Canonical task label -> spellings models use for it.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "positive": ("pos", "positive", "label_positive", "5 stars", "4 stars"),
    "negative": ("neg", "negative", "label_negative", "1 star", "2 stars"),
    "neutral": ("neu", "neutral", "label_neutral", "3 stars"),
    "toxic": ("toxic", "toxicity", "offensive", "hate", "abusive", "insult"),
    "non-toxic": (
        "non-toxic",
        "nontoxic",
        "non_toxic",
        "not toxic",
        "not-toxic",
        "neutral",
        "normal",
        "clean",
        "not-offensive",
        "not offensive",
        "none",
    ),
}
GENERIC = re.compile(r"^label[_ ]?(\d+)$", re.IGNORECASE)
# "LABEL_0: negative", "0 -> negative", "label 2 = `positive`," ... one per line or list item.
CARD_MAPPING = re.compile(
    r"(?:label[_ ]?)?(\d+)\s*(?::|->|→|=|means|is)\s*[`'\"]?"
    r"([A-Za-z][\w\- ]{0,30}?)[`'\"]?\s*(?:$|[,;.|)])",
    re.IGNORECASE | re.MULTILINE,
)

# How a model label was mapped: the evidence string starts with one of these, and the
# label-fit part of the selection score trusts them in this order.
USER = "user"
EXACT = "exact"
LABEL_WORD = "label word"
SYNONYM = "synonym"
FROM_CARD = "card says"
PROPOSED = "proposed"
LEARNED = "learned"
NO_MATCH = "no match"
TRUST = {
    USER: 1.0,
    EXACT: 1.0,
    LABEL_WORD: 1.0,
    SYNONYM: 1.0,
    LEARNED: 0.95,
    FROM_CARD: 0.9,
    PROPOSED: 0.75,
}
# Evidence that needs no data: the user said it, or the names say it. Anything else (a card's
# list, an LLM's guess, no match) is learned from the user's rows when someone can label some.
BY_NAME = (USER, EXACT, LABEL_WORD, SYNONYM)

# (unmapped model labels, task labels, model card) -> {model label: task label or None}
Proposer = Callable[[list[str], list[str], str], dict]

# Texts whose label no reasonable reader disputes, per canonical task label (SYNONYMS keys).
PROBES: dict[str, tuple[str, ...]] = {
    "positive": (
        "I absolutely love this, it made my day!",
        "What a wonderful experience, everything was perfect. Highly recommend!",
        "So happy with how it turned out, thank you so much!",
    ),
    "negative": (
        "This is terrible, I hate it and want my money back.",
        "Worst experience ever, awful service and a complete waste of time.",
        "I am so angry and disappointed, everything went wrong.",
    ),
    "neutral": (
        "The meeting is scheduled for 3 pm on Tuesday.",
        "The report has twelve pages and two appendices.",
        "The train to Boston leaves from platform 4.",
    ),
    "toxic": (
        "You are a worthless idiot, shut up and go away.",
        "Nobody wants you here, you pathetic stupid moron.",
        "Go to hell, you disgusting piece of garbage.",
    ),
    "non-toxic": (
        "Thanks for your help, have a nice day!",
        "I think the second option makes more sense for this project.",
        "The weather is lovely this afternoon.",
    ),
}


def normalize(label: str) -> str:
    return re.sub(r"\s+", " ", label.strip().lower().replace("_", " ").replace("-", " "))


@dataclass(frozen=True)
class Alignment:
    mapping: dict[str, str | None]  # model label -> task label (None: unmappable)
    evidence: dict[str, str]  # model label -> how it was mapped

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.mapping.values())

    def covers(self, task_labels: Sequence[str]) -> bool:
        return set(task_labels) <= {v for v in self.mapping.values() if v}

    def missing(self, task_labels: Sequence[str]) -> list[str]:
        return [t for t in task_labels if t not in set(self.mapping.values())]

    def inverse(self, task_labels: Sequence[str]) -> dict[str, str]:
        """Task label -> the first model label that maps to it (used to fine-tune)."""
        inverse: dict[str, str] = {}
        for model_label, task_label in self.mapping.items():
            if task_label is not None and task_label not in inverse:
                inverse[task_label] = model_label
        return {t: inverse[t] for t in task_labels if t in inverse}

    @property
    def many_to_one(self) -> dict[str, list[str]]:
        """Task label -> the model labels merged into it, where more than one is."""
        merged: dict[str, list[str]] = {}
        for model_label, task_label in self.mapping.items():
            if task_label is not None:
                merged.setdefault(task_label, []).append(model_label)
        return {t: labels for t, labels in merged.items() if len(labels) > 1}

    @property
    def by_name(self) -> bool:
        """Every label mapped by the user or by its name: nothing to learn from data."""
        return all(e.startswith(BY_NAME) for e in self.evidence.values())

    @property
    def fit(self) -> float:
        """0..1: how well-founded the map is (1 = every label an exact or synonym match)."""
        if not self.evidence:
            return 0.0
        trust = [
            next((w for how, w in TRUST.items() if e.startswith(how)), 0.0)
            for e in self.evidence.values()
        ]
        return sum(trust) / len(trust)


def _card_mapping(card: str) -> dict[str, str]:
    """`LABEL_0: negative` / `LABEL_0 -> negative` / `0 = negative` lines from a model card."""
    found: dict[str, str] = {}
    for match in CARD_MAPPING.finditer(card):
        found.setdefault(match.group(1), match.group(2).strip())
    return found


def _match(
    name: str, task_labels: Sequence[str], words: Mapping[str, str] | None = None
) -> tuple[str | None, str]:
    """The task label `name` spells, and how: the label itself, its label word
    (`words`: task label -> the word the LLM is shown), or a synonym of either."""
    norm = normalize(name)
    words = words or {}
    for task_label in task_labels:
        if normalize(task_label) == norm:
            return task_label, EXACT
    for task_label in task_labels:
        word = words.get(task_label)
        if word and normalize(word) == norm:
            return task_label, f"{LABEL_WORD}: {task_label} is shown as {word}"
    for task_label in task_labels:
        for spelling_of in (task_label, words.get(task_label)):
            spellings = SYNONYMS.get(canonical(spelling_of or "") or "", ())
            if norm in {normalize(s) for s in spellings}:
                if spelling_of == task_label:
                    return task_label, SYNONYM
                return task_label, f"{SYNONYM} of the label word {spelling_of} ({task_label})"
    return None, NO_MATCH


def canonical(task_label: str) -> str | None:
    """The SYNONYMS key a task label is spelled as ("Non_Toxic" -> "non-toxic"), if any.

    Only the key itself counts: a task label "hate" is its own class, not a spelling of toxic.
    """
    norm = normalize(task_label)
    return next((key for key in SYNONYMS if normalize(key) == norm), None)


def _apply_proposal(
    propose: Proposer,
    mapping: dict[str, str | None],
    evidence: dict[str, str],
    task_labels: Sequence[str],
    card: str,
) -> None:
    unresolved = [label for label, target in mapping.items() if target is None]
    if not unresolved:
        return
    proposal = propose(unresolved, list(task_labels), card) or {}
    for label in unresolved:
        suggested = proposal.get(label)
        if suggested is None:
            continue
        target, _ = _match(str(suggested), task_labels)
        if target is None or normalize(target) != normalize(str(suggested)):
            # Only an exact task label is accepted: a proposal is a guess, not a new label.
            evidence[label] = f"{NO_MATCH} (proposed {suggested!r}, not a task label)"
            continue
        mapping[label] = target
        evidence[label] = f"{PROPOSED} by the LLM: {label} = {target}"


# The local server's context is 4096 tokens; the start of a card is where labels are explained.
CARD_CHARS = 2000
_JSON_OBJECT = re.compile(r"\{.*\}", re.S)


def parse_proposal(answer: str) -> dict:
    """The JSON object in an LLM answer ({} when there is none); values are checked by align."""
    found = _JSON_OBJECT.search(answer)
    if found is None:
        return {}
    try:
        proposal = json.loads(found.group(0))
    except json.JSONDecodeError:
        return {}
    return proposal if isinstance(proposal, dict) else {}


def machine_label_map_cache() -> Path:
    """The per-user answer cache of label-map proposals the CLI's runs share: a model's labels
    and card and the task asked about again (a second run on the same hub) cost no call."""
    return Path(platformdirs.user_cache_dir("autoannotator")) / "label-maps.sqlite"


def llm_proposer(client, task_description: str, cache=None) -> Proposer:
    """A Proposer that asks the run's LLM (an agent.llm.client.LLMClient), one call per model;
    `cache` (an agent.llm.client.AnswerCache) keeps the answers beyond the run."""
    templates = load_prompt("label_map")

    def propose(model_labels: list[str], task_labels: list[str], card: str) -> dict:
        # The card comes from the hub: it is data, fenced so it cannot close its own block.
        card = escape_tag(card[:CARD_CHARS], "card")
        variables = {
            "task_description": task_description,
            "task_labels": task_labels,
            "model_labels": model_labels,
            "card": card,
            "example": {label: task_labels[0] for label in model_labels[:1]},
        }
        messages = [
            SystemMessage(templates["system"].render(**variables)),
            HumanMessage(templates["user"].render(**variables)),
        ]
        answer = client.complete(messages, purpose=Purpose.LABEL_MAP, max_tokens=200, cache=cache)
        proposal = parse_proposal(answer)
        if not proposal:
            log.info("label map: no JSON object in the LLM's answer %r", answer[:200])
        return proposal

    return propose


def _note_many_to_one(alignment: Alignment) -> None:
    for task_label, model_labels in alignment.many_to_one.items():
        note = f"; many-to-one: {', '.join(model_labels)} -> {task_label}"
        for model_label in model_labels:
            alignment.evidence[model_label] += note


def align(
    model_labels: Sequence[str],
    task_labels: Sequence[str],
    card: str = "",
    propose: Proposer | None = None,
    *,
    user_map: Mapping[str, str] | None = None,
    words: Mapping[str, str] | None = None,
) -> Alignment:
    """Map every model label onto a task label (None where nothing supports one).

    `user_map` (model label -> task label, the user's `--label-map`) wins over every rule;
    `words` (task label -> label word, `--label-words`) lets a model label equal to a word
    map to its task label."""
    from_card = _card_mapping(card)
    users = {normalize(k): v for k, v in (user_map or {}).items() if v in task_labels}
    mapping: dict[str, str | None] = {}
    evidence: dict[str, str] = {}
    for index, label in enumerate(model_labels):
        if normalize(label) in users:
            mapping[label], evidence[label] = users[normalize(label)], USER
            continue
        target, how = _match(label, task_labels, words)
        generic = GENERIC.match(label.strip())
        if target is None and generic:
            named = from_card.get(generic.group(1)) or from_card.get(str(index))
            if named:
                target, how = _match(named, task_labels, words)
                how = f"{FROM_CARD} {label} = {named} ({how})"
        mapping[label] = target
        evidence[label] = how
    if propose is not None:
        _apply_proposal(propose, mapping, evidence, task_labels, card)
    alignment = Alignment(mapping=mapping, evidence=evidence)
    _note_many_to_one(alignment)
    return alignment


def _spelled(name: str) -> str | None:
    """The SYNONYMS key `name` is, or else the first whose spellings list it (NEG -> negative)."""
    norm = normalize(name)
    return canonical(name) or next(
        (key for key, spellings in SYNONYMS.items() if norm in {normalize(x) for x in spellings}),
        None,
    )


# Task-label names that lean the way a sentiment does, to suggest a --label-map when a model
# says negative/positive and the task bearish/bullish; only ever a suggestion to the user.
LEANINGS: dict[str, tuple[str, ...]] = {
    "negative": ("bearish", "bear", "down", "sell", "fall", "bad", "con", "against", "loss"),
    "positive": ("bullish", "bull", "up", "buy", "rise", "good", "pro", "for", "gain"),
    "neutral": ("hold", "flat", "none", "mixed", "other", "neither"),
}


@dataclass(frozen=True)
class Suggestion:
    """A --label-map that would let a model cover the task: model label -> task label."""

    pairs: dict[str, str]
    by_order: bool  # some pairs only follow the order of the labels, with nothing to back them


def suggest_label_map(
    alignment: Alignment, task_labels: Sequence[str], words: Mapping[str, str] | None = None
) -> Suggestion | None:
    """Pairs for the model labels nothing maps (or only an LLM guess does) and the task labels
    nothing reaches, one to one: by leaning (negative -> bearish), else in label order. None
    when the counts differ (a many-to-one map is the user's to say)."""
    words = words or {}
    fixed = {
        m: t
        for m, t in alignment.mapping.items()
        if t is not None and not alignment.evidence.get(m, "").startswith(PROPOSED)
    }
    free = [m for m in alignment.mapping if m not in fixed]
    missing = [t for t in task_labels if t not in set(fixed.values())]
    if not free or len(free) != len(missing):
        return None
    pairs: dict[str, str] = {}
    for model_label in free:
        leaning = LEANINGS.get(_spelled(model_label) or "", ())
        target = next(
            (
                t
                for t in missing
                if t not in pairs.values()
                and {normalize(t), normalize(words.get(t, t))} & {normalize(x) for x in leaning}
            ),
            None,
        )
        if target is not None:
            pairs[model_label] = target
    rest = [t for t in missing if t not in pairs.values()]
    unpaired = [m for m in free if m not in pairs]
    pairs.update(zip(unpaired, rest, strict=True))
    return Suggestion({m: pairs[m] for m in free}, by_order=bool(unpaired))


def probes_for(
    task_labels: Sequence[str], aliases: Mapping[str, Sequence[str]] | None = None
) -> list[tuple[str, str]]:
    """(text, task label) for every task label with obvious examples; others get none.

    A task label that is no SYNONYMS key (bearish) borrows the probes of what the user said it
    is (`aliases`: its label word, the model labels the --label-map sends to it), when those
    all name one key (negative)."""
    probes = []
    for task_label in task_labels:
        key = canonical(task_label)
        if key is None:
            keys = {_spelled(alias) for alias in (aliases or {}).get(task_label, ())} - {None}
            key = next(iter(keys)) if len(keys) == 1 else None
        probes.extend((text, task_label) for text in PROBES.get(key or "", ()))
    return probes


@dataclass(frozen=True)
class ProbeCheck:
    total: int
    correct: int
    flags: list[str]  # "positive probes came out as negative (2/3)"

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


def check_probes(
    alignment: Alignment, probes: Sequence[tuple[str, str]], predicted: Sequence[str]
) -> ProbeCheck:
    """Compare the mapped model predictions on probe texts (`predicted`: model labels, in
    probe order) with the probes' obvious labels; flag every task label that came out wrong."""
    wrong: dict[str, dict[str, int]] = {}
    seen: dict[str, int] = {}
    correct = 0
    for (_, expected), model_label in zip(probes, predicted, strict=True):
        got = alignment.mapping.get(model_label) or f"{model_label} (unmapped)"
        seen[expected] = seen.get(expected, 0) + 1
        if got == expected:
            correct += 1
        else:
            wrong.setdefault(expected, {})
            wrong[expected][got] = wrong[expected].get(got, 0) + 1
    flags = [
        f"{expected} probes came out as "
        + ", ".join(f"{got} ({n}/{seen[expected]})" for got, n in answers.items())
        for expected, answers in wrong.items()
    ]
    return ProbeCheck(total=len(probes), correct=correct, flags=flags)


# Shuffles of the teacher's answers that say how well a best map fits by chance alone.
SHUFFLES = 200


@dataclass(frozen=True)
class LearnedMap:
    """A map chosen from rows both the model and a teacher (gold rows, the reviewer) labeled."""

    alignment: Alignment
    matrix: dict[str, dict[str, int]]  # model label -> task label -> rows labeled so by both
    rows: int  # sample rows the teacher labeled
    agreement: float  # share of those rows where the mapped model label is the teacher's
    chance: float  # the agreement expected from the two label distributions alone
    kappa: float  # (agreement - chance) / (1 - chance)
    # Share of SHUFFLES shuffles of the teacher's answers whose own best map reaches this
    # kappa: choosing the best of many maps finds some agreement even in noise, more so on
    # few rows and balanced labels, and this says how much.
    p_value: float
    teacher: str  # "the gold labels", "the reviewer"

    def to_json(self) -> dict:
        return {
            "teacher": self.teacher,
            "rows": self.rows,
            "agreement": round(self.agreement, 3),
            "chance": round(self.chance, 3),
            "kappa": round(self.kappa, 3),
            "p_value": round(self.p_value, 3),
            "matrix": self.matrix,
        }


def _best_map(counts: np.ndarray) -> list[int | None]:
    """Per model label (row), the task label (column) of the assignment that maximises the
    agreeing rows; a row left over goes to its most agreeing column (None if it has no rows)."""
    columns: list[int | None] = [None] * counts.shape[0]
    for row, column in zip(*linear_sum_assignment(counts, maximize=True), strict=True):
        columns[row] = int(column)
    for row, column in enumerate(columns):
        if column is None and counts[row].sum() > 0:
            columns[row] = int(counts[row].argmax())
    return columns


def _fit(predicted: np.ndarray, truth: np.ndarray, shape: tuple[int, int]):
    """(confusion counts, best map, kappa of the mapped labels against `truth`); labels are
    indices into the model's and the task's label lists."""
    counts = np.zeros(shape, dtype=int)
    np.add.at(counts, (predicted, truth), 1)
    columns = _best_map(counts)
    mapped = np.array([-1 if columns[p] is None else columns[p] for p in predicted])
    # Undefined (nan) when both sides use one label only: no evidence for a map either way.
    kappa = float(cohen_kappa_score(truth, mapped))
    return counts, columns, 0.0 if np.isnan(kappa) else kappa


def learn_map(
    prior: Alignment,
    task_labels: Sequence[str],
    predicted: Sequence[str],
    taught: Sequence[str | None],
    teacher: str,
) -> LearnedMap | None:
    """The model-label -> task-label map that agrees best with `taught` (a task label or None
    per row) on the rows the model labeled `predicted` (its own labels); None when the teacher
    labeled no row. `prior` (what names, the card or an LLM said) is kept in the evidence."""
    model_labels, task_labels = list(prior.mapping), list(task_labels)
    pairs = [(p, t) for p, t in zip(predicted, taught, strict=True) if t in task_labels]
    if not pairs:
        return None
    ours = np.array([model_labels.index(p) for p, _ in pairs])
    truth = np.array([task_labels.index(t) for _, t in pairs])
    shape = (len(model_labels), len(task_labels))
    counts, columns, kappa = _fit(ours, truth, shape)
    rng = np.random.default_rng(0)  # the same rows give the same verdict
    as_good = sum(
        _fit(ours, rng.permutation(truth), shape)[2] >= kappa - 1e-9 for _ in range(SHUFFLES)
    )
    mapping = {
        label: None if column is None else task_labels[column]
        for label, column in zip(model_labels, columns, strict=True)
    }
    evidence = {}
    for row, model_label in enumerate(model_labels):
        target, column, total = mapping[model_label], columns[row], int(counts[row].sum())
        if target is None or column is None:
            evidence[model_label] = f"{NO_MATCH} (never answered on {len(pairs)} rows)"
            continue
        before = prior.mapping.get(model_label)
        said = (
            "the prior agrees"
            if before == target
            else f"prior: {prior.evidence.get(model_label, NO_MATCH).split(';')[0]}"
        )
        evidence[model_label] = (
            f"{LEARNED} on {len(pairs)} rows: {model_label} = {target} "
            f"({int(counts[row, column])}/{total} of its rows); {said}"
        )
    mapped = [mapping[p] for p, _ in pairs]
    agreement = sum(m == t for m, (_, t) in zip(mapped, pairs, strict=True)) / len(pairs)
    chance = (
        sum(mapped.count(label) * int((truth == j).sum()) for j, label in enumerate(task_labels))
        / len(pairs) ** 2
    )
    alignment = Alignment(mapping=mapping, evidence=evidence)
    _note_many_to_one(alignment)
    matrix = {
        m: {t: int(counts[i, j]) for j, t in enumerate(task_labels) if counts[i, j]}
        for i, m in enumerate(model_labels)
    }
    p_value = (1 + as_good) / (1 + SHUFFLES)
    return LearnedMap(alignment, matrix, len(pairs), agreement, chance, kappa, p_value, teacher)
