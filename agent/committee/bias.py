"""The reviewer's label bias, divided out of its probabilities.

A small LLM leans to some labels whatever the text says: the bundled 1.5B model, shown eight
examples, answered "neutral" for 91 of 100 financial sentences (66 are) and "bullish" once (23
are). Its probability per label still ranks the texts well, so the lean is a factor common to
every answer: p(label | text) ≈ q(label | text) · bias(label). Dividing each answer's
distribution by the mean of its distributions over the samples it was asked about (the
reviewer's prior, estimated without any gold) and taking the largest is prior correction, the
label-free sibling of contextual calibration (Zhao et al. 2021, "Calibrate before use"). The
contextual version, the distribution for texts that say nothing ("N/A", "", "[MASK]") shown the
same examples, was measured too and over-corrects badly here: the 1.5B model says "neutral" at
0.85-0.98 for an empty text, so dividing by it erases neutral (bench/review_quality.py,
`debiased.content_free`).

Measured with `python -m bench.review_quality --rows 100 --pool 1000 --configs fixed8` (the
bundled model, 8 fixed examples, the same answers with and without the correction):
financial news (bearish/bullish/neutral) accuracy 74% → 78%, macro-F1 55.4 → 73.1, recall
bearish 64 → 91, bullish 4 → 48, neutral 100 → 86; tweets 64% → 68%, macro-F1 63.8 → 66.6,
recall negative 70 → 79, neutral 50 → 56, positive 100 → 87.

Pure functions over arrays (labels are column indices), as in agent.committee.trust.
"""

from __future__ import annotations

import numpy as np

# Answers with probabilities needed before a prior is estimated from them: fewer, and the mean
# is too noisy to divide by (the answers stay as given).
MIN_ANSWERS = 20
# Floor on a label's prior, so a label the reviewer never gave mass to does not win everything.
PRIOR_FLOOR = 1e-3


def answer_prior(distributions: np.ndarray) -> np.ndarray | None:
    """The reviewer's mean distribution over labels (rows: answers, columns: labels), or None
    when there are fewer than MIN_ANSWERS answers."""
    distributions = np.asarray(distributions, dtype=float)
    if len(distributions) < MIN_ANSWERS:
        return None
    return distributions.mean(axis=0)


def prior_corrected(distributions: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Each answer's distribution divided by the prior, normalised: its label is the argmax."""
    weights = np.maximum(np.asarray(prior, dtype=float), PRIOR_FLOOR)
    corrected = np.asarray(distributions, dtype=float) / weights
    return corrected / corrected.sum(axis=1, keepdims=True)
