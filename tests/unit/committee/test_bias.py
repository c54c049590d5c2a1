"""Prior correction of a reviewer's lean (agent.committee.bias), on simulated answers whose
truth is known: an informative reviewer (its evidence for the true label, plus noise) whose
probabilities are multiplied by a lean, as a small LLM's are."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import recall_score

from agent.committee import bias

ROWS = 600


def _answers(prevalence: list[float], lean: list[float], seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.choice(len(prevalence), size=ROWS, p=prevalence)
    logits = rng.normal(0.0, 1.0, size=(ROWS, len(prevalence)))
    logits[np.arange(ROWS), truth] += 1.5
    said = np.exp(logits) * np.array(lean)
    return truth, said / said.sum(axis=1, keepdims=True)


def _corrected(said: np.ndarray) -> np.ndarray:
    prior = bias.answer_prior(said)
    assert prior is not None
    return bias.prior_corrected(said, prior)


def test_a_reviewer_that_leans_away_from_a_label_names_it_again_once_the_lean_is_divided_out():
    truth, said = _answers([0.34, 0.33, 0.33], lean=[1.0, 0.15, 1.0])
    corrected = _corrected(said)
    before = recall_score(truth, said.argmax(axis=1), average=None)
    after = recall_score(truth, corrected.argmax(axis=1), average=None)
    assert before[1] < 0.25 and after[1] >= 0.5  # the blind spot closes
    assert (corrected.argmax(axis=1) == truth).mean() > (said.argmax(axis=1) == truth).mean() + 0.05
    assert np.allclose(corrected.sum(axis=1), 1.0)


def test_on_skewed_data_the_lean_still_costs_more_than_the_correction():
    truth, said = _answers([0.2, 0.6, 0.2], lean=[1.0, 0.15, 1.0])
    corrected = _corrected(said)
    assert (corrected.argmax(axis=1) == truth).mean() > (said.argmax(axis=1) == truth).mean()


def test_a_reviewer_without_a_lean_on_balanced_data_keeps_nearly_every_answer():
    _, said = _answers([0.34, 0.33, 0.33], lean=[1.0, 1.0, 1.0])
    changed = (_corrected(said).argmax(axis=1) != said.argmax(axis=1)).mean()
    assert changed < 0.1


def test_too_few_answers_give_no_prior_and_a_label_never_given_mass_cannot_take_over():
    assert bias.answer_prior(np.full((bias.MIN_ANSWERS - 1, 3), 1 / 3)) is None
    said = np.array([[0.7, 0.3, 0.0], [0.4, 0.6, 0.0]] * bias.MIN_ANSWERS)
    corrected = _corrected(said)
    assert corrected.argmax(axis=1).tolist() == said.argmax(axis=1).tolist()
    assert (corrected[:, 2] == 0).all()
