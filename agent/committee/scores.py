"""Labels scored against known ones with scikit-learn: accuracy, macro-F1, per-class precision,
recall and F1, and the confusion matrix, as plain JSON-ready values (eval, the report).

A row without a prediction (an empty text, a model with no answer) counts as wrong: it is
scored as NO_LABEL, a value outside the task's labels, so it is a miss for its true class and
no class's false positive.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

NO_LABEL = "(no label)"


def _predictions(predicted: Sequence[str | None]) -> list[str]:
    return [NO_LABEL if pd.isna(p) else str(p) for p in predicted]


def accuracy(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    if not len(gold):
        return float("nan")
    return float(accuracy_score(list(gold), _predictions(predicted)))


def macro_f1(predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]) -> float:
    """Macro-averaged F1 over the task's labels (a label never predicted nor true scores 0)."""
    if not len(gold):
        return float("nan")
    _, _, f1, _ = precision_recall_fscore_support(
        list(gold), _predictions(predicted), labels=list(labels), average="macro", zero_division=0
    )
    return float(f1)


def classification_scores(
    predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]
) -> dict:
    """accuracy, macro_f1, per_class {label: precision, recall, f1, support} and confusion
    {labels, matrix: rows true, columns predicted, a last column for NO_LABEL}."""
    guesses, truth = _predictions(predicted), list(gold)
    if not truth:
        return {"rows": 0}
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, guesses, labels=list(labels), zero_division=0
    )
    columns = [*labels, NO_LABEL]
    matrix = confusion_matrix(truth, guesses, labels=columns)[: len(labels)]
    return {
        "rows": len(truth),
        "accuracy": round(accuracy(guesses, truth), 4),
        "macro_f1": round(macro_f1(guesses, truth, labels), 4),
        "per_class": {
            label: {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f1": round(float(f), 4),
                "support": int(s),
            }
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion": {"labels": list(labels), "columns": columns, "matrix": matrix.tolist()},
    }


def scores_markdown(scores: dict) -> list[str]:
    """Markdown lines: the per-class table, then the confusion matrix (rows: the true label)."""
    if not scores.get("rows"):
        return ["No row with a known label was scored."]
    lines = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    lines += [
        f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |"
        for label, s in scores["per_class"].items()
    ]
    lines.append(
        f"| **all** | accuracy {scores['accuracy']:.3f} | | macro-F1 {scores['macro_f1']:.3f} | "
        f"{scores['rows']} |"
    )
    confusion = scores["confusion"]
    lines += [
        "",
        "| true \\ predicted | " + " | ".join(confusion["columns"]) + " |",
        "|---|" + "---|" * len(confusion["columns"]),
    ]
    lines += [
        f"| {label} | " + " | ".join(str(n) for n in row) + " |"
        for label, row in zip(confusion["labels"], confusion["matrix"], strict=True)
    ]
    return lines
