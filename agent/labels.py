"""Label alignment: map a model's id2label onto the task's labels.

Order of evidence: the model's label equals a task label; a known synonym (POS -> positive);
for generic names (LABEL_0) the card's own mapping ("LABEL_0: negative"); many-to-one is fine
(1-5 stars onto three sentiments). A model is usable only when every one of its labels maps
to a task label and every task label is reachable, so its votes are always in the task's space.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

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


def _card_mapping(card: str) -> dict[str, str]:
    """`LABEL_0: negative` / `LABEL_0 -> negative` / `0 = negative` lines from a model card."""
    found: dict[str, str] = {}
    for match in CARD_MAPPING.finditer(card):
        found.setdefault(match.group(1), match.group(2).strip())
    return found


def _match(name: str, task_labels: Sequence[str]) -> tuple[str | None, str]:
    norm = normalize(name)
    for task_label in task_labels:
        if normalize(task_label) == norm:
            return task_label, "exact"
    for task_label in task_labels:
        spellings = SYNONYMS.get(normalize(task_label).replace(" ", "-"), ())
        if norm in {normalize(s) for s in spellings}:
            return task_label, "synonym"
    return None, "no match"


def align(model_labels: Sequence[str], task_labels: Sequence[str], card: str = "") -> Alignment:
    from_card = _card_mapping(card)
    mapping: dict[str, str | None] = {}
    evidence: dict[str, str] = {}
    for index, label in enumerate(model_labels):
        target, how = _match(label, task_labels)
        generic = GENERIC.match(label.strip())
        if target is None and generic:
            named = from_card.get(generic.group(1)) or from_card.get(str(index))
            if named:
                target, how = _match(named, task_labels)
                how = f"card says {label} = {named} ({how})"
        mapping[label] = target
        evidence[label] = how
    return Alignment(mapping=mapping, evidence=evidence)
