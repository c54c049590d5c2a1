"""The trust maths on arrays: a reviewer's blind spot shows in its matrix, the posterior
weighs it, the intervals and the calibration error behave as their definitions say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from agent.committee import trust


def _world(rows: int = 3000, seed: int = 0):
    """True labels over 3 classes, a committee prior that is right 70% of the time with its
    mass, and a reviewer that never answers label 1 (it says 2 there) and is right elsewhere."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, rows)
    guess = np.where(rng.random(rows) < 0.7, truth, rng.integers(0, 3, rows))
    prior = np.full((rows, 3), 0.2)
    prior[np.arange(rows), guess] = 0.6
    answers = np.where(truth == 1, 2, truth)
    return truth, prior, answers


def test_the_matrix_shows_a_label_the_reviewer_never_says():
    _, prior, answers = _world()
    matrix = trust.reviewer_confusion(prior, answers)
    assert matrix[1, 1] < 0.05 and matrix[1, 2] > 0.8
    assert matrix[0, 0] > 0.7 and matrix[2, 2] > 0.7
    assert np.allclose(matrix.sum(axis=1), 1.0)


def test_known_rows_anchor_the_matrix():
    truth, prior, answers = _world(rows=600)
    known = trust.one_hot(truth, 3)
    matrix = trust.reviewer_confusion(prior, answers, known)
    counted = pd.crosstab(truth, answers, normalize="index").reindex(columns=range(3)).fillna(0)
    assert np.abs(matrix - counted.to_numpy()).max() < 0.02


def test_the_posterior_beats_both_the_committee_and_the_reviewers_word():
    truth, prior, answers = _world()
    matrix = trust.reviewer_confusion(prior, answers)
    posterior = trust.combine(prior, answers, matrix)
    accuracy = {
        "committee": (prior.argmax(1) == truth).mean(),
        "reviewer": (answers == truth).mean(),
        "posterior": (posterior.argmax(1) == truth).mean(),
    }
    assert accuracy["posterior"] > max(accuracy["committee"], accuracy["reviewer"])
    unasked = trust.combine(prior, np.full(len(prior), -1), matrix)
    assert np.allclose(unasked, prior)  # a row nobody reviewed keeps the committee's view


def test_a_members_own_probabilities_replace_the_spread_where_it_reports_them():
    votes = np.array([[0, 1], [2, 2]])
    scores = np.array([[0.6, 0.8], [0.5, 0.9]])
    probs = np.full((2, 2, 3), np.nan)
    probs[0, 0] = [0.6, 0.0, 0.4]  # member 0 on row 0: its own; everything else spread
    spread = trust.member_distributions(votes, scores, 3)
    mixed = trust.member_distributions(votes, scores, 3, probs)
    assert np.allclose(mixed[1], spread[1])
    assert np.allclose(mixed[0], [[0.6, 0.0, 0.4], [0.1, 0.8, 0.1]])


def test_a_models_probabilities_go_to_the_task_labels_they_map_to():
    probs = [
        {"NEG": 0.2, "NEU": 0.3, "POS": 0.5},
        {"toxic": 0.9, "insult": 0.6, "clean": 0.5},  # sigmoid heads: no sum to 1
        {"other": 1.0, "NEG": 0.0},  # no mass on any task label
    ]
    label_map = {"NEG": "neg", "NEU": "neu", "POS": "pos", "toxic": "neg", "insult": "neg",
                 "clean": "pos"}  # fmt: skip
    out = trust.task_distribution(probs, label_map, ["neg", "neu", "pos"])
    assert np.allclose(out[0], [0.2, 0.3, 0.5])
    assert np.allclose(out[1], [1.5 / 2.0, 0.0, 0.5 / 2.0])
    assert np.isnan(out[2]).all()


def test_sure_and_unsure_answers_are_weighed_as_they_turn_out_not_as_they_say():
    """A reviewer right 75% of the time whose confidence tells a little: sure (0.95) on 80% of
    its right answers and 30% of its wrong ones. One matrix for all its answers follows it
    everywhere; a matrix per kind of answer lets the committee win where it is unsure."""
    rng = np.random.default_rng(1)
    rows = 3000
    truth = rng.integers(0, 3, rows)
    guess = np.where(rng.random(rows) < 0.6, truth, rng.integers(0, 3, rows))
    prior = np.full((rows, 3), 0.25)
    prior[np.arange(rows), guess] = 0.5
    right = rng.random(rows) < 0.75
    answers = np.where(right, truth, (truth + rng.integers(1, 3, rows)) % 3)
    sure = rng.random(rows) < np.where(right, 0.8, 0.3)
    own = np.where(sure, 0.95, 0.6)
    given = np.repeat(((1 - own) / 2)[:, None], 3, axis=1)
    given[np.arange(rows), answers] = own
    strata = trust.answer_strata(given, answers)
    assert set(strata.tolist()) == {1, 2}
    no_known = np.zeros((rows, 3))
    _, by_kind = trust.combine_by_strata(prior, answers, no_known, strata)
    _, alike = trust.combine_by_strata(prior, answers, no_known, np.zeros(rows, dtype=int))
    assert np.allclose(
        alike, trust.combine(prior, answers, trust.reviewer_confusion(prior, answers))
    )
    assert (by_kind.argmax(1) == truth).mean() > (alike.argmax(1) == truth).mean() + 0.05
    # Without probabilities (one kind of answer), nothing changes.
    unasked = np.full(rows, -1)
    assert np.allclose(trust.combine_by_strata(prior, unasked, no_known, strata)[1], prior)
    assert (trust.answer_strata(np.full((2, 3), np.nan), np.array([0, 1])) == 0).all()


def test_the_committee_distribution_with_equal_weights_is_the_mean_of_its_members():
    votes = np.array([[0, 0, 1]])
    scores = np.array([[0.8, 0.6, 0.9]])
    expected = np.array([[0.8 + 0.6 + 0.05, 0.1 + 0.2 + 0.9, 0.1 + 0.2 + 0.05]]) / 3
    members = trust.member_distributions(votes, scores, 3)
    assert np.allclose(trust.pool(members, np.full(3, 1 / 3)), expected)


def _members(rows: int, accuracies: list[float], seed: int = 0):
    """True labels over 3 classes and members each right with its own probability, putting
    0.8 on what it says."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, rows)
    members = np.full((rows, len(accuracies), 3), 0.1)
    for m, accuracy in enumerate(accuracies):
        said = np.where(rng.random(rows) < accuracy, truth, (truth + rng.integers(1, 3, rows)) % 3)
        members[np.arange(rows), m, said] = 0.8
    return truth, members


def test_pool_weights_go_to_the_member_that_is_right_more_often():
    truth, members = _members(2000, [0.85, 0.5, 0.5])
    weights = trust.pool_weights(members, trust.one_hot(truth, 3))
    assert weights[0] > 0.6 and weights[1] < 0.25 and weights[2] < 0.25
    assert weights.sum() == pytest.approx(1.0)
    pooled = trust.pool(members, weights)
    mean = members.mean(axis=1)
    assert (pooled.argmax(1) == truth).mean() > (mean.argmax(1) == truth).mean() + 0.05


def test_weights_matter_only_where_they_explain_the_rows_better_than_chance():
    truth, members = _members(2000, [0.85, 0.5, 0.5])
    known = trust.one_hot(truth, 3)
    assert trust.pool_weights_p(members, known, trust.pool_weights(members, known)) < 0.001
    # Equally good in expectation (at this seed their accuracies are within 2 points; at one
    # seed in seven the sample's own differences pass the test, as a 5% level allows and more).
    truth, members = _members(2000, [0.7, 0.7, 0.7], seed=0)
    known = trust.one_hot(truth, 3)
    assert trust.pool_weights_p(members, known, trust.pool_weights(members, known)) > 0.05
    assert trust.pool_weights_p(members[:0], known[:0], np.full(3, 1 / 3)) == 1.0


def test_pool_weights_stay_equal_for_equal_members_and_without_rows():
    truth, members = _members(3000, [0.7, 0.7, 0.7])
    assert np.allclose(trust.pool_weights(members, trust.one_hot(truth, 3)), 1 / 3, atol=0.06)
    assert np.allclose(trust.pool_weights(members[:0], np.zeros((0, 3))), 1 / 3)


def test_intervals_hold_the_point_and_narrow_with_rows():
    small, large = trust.accuracy_interval(7, 10), trust.accuracy_interval(700, 1000)
    for accuracy in (small, large):
        assert accuracy.low < accuracy.value < accuracy.high
    assert large.high - large.low < small.high - small.low
    assert trust.accuracy_interval(0, 0).to_json()["accuracy"] is None


def test_calibration_error_is_zero_when_confidence_matches_accuracy_and_isotonic_fixes_a_shift():
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.3, 1.0, 5000)
    correct = rng.random(5000) < confidence
    assert trust.expected_calibration_error(confidence, correct) < 0.03
    overconfident = np.clip(confidence + 0.2, 0, 1)
    assert trust.expected_calibration_error(overconfident, correct) > 0.1
    calibration = trust.fit_calibration(overconfident, correct, seed=0)
    assert calibration.method == "isotonic"
    assert calibration.ece_before > 0.1 and calibration.ece < 0.03  # held out
    assert trust.expected_calibration_error(calibration(overconfident), correct) < 0.03


def test_on_a_few_hundred_known_rows_a_sigmoid_fixes_a_shift_and_is_dropped_where_it_cannot():
    rng = np.random.default_rng(2)
    confidence = rng.uniform(0.4, 0.75, 300)
    correct = rng.random(300) < confidence
    overconfident = confidence + 0.2
    calibration = trust.fit_calibration(overconfident, correct, seed=0)
    assert calibration.method == "sigmoid"
    assert calibration.ece < calibration.ece_before - 0.1
    # All right: nothing to fit a calibration to, and the confidence stays as it is.
    kept = trust.fit_calibration(overconfident, np.ones(300, dtype=bool), seed=0)
    assert kept.method == "none"
    assert np.array_equal(kept(overconfident), overconfident)


def test_the_sigmoid_without_a_prior_is_platts_and_a_strong_prior_leaves_the_confidence_be():
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.4, 0.95, 400)
    correct = rng.random(400) < confidence - 0.1
    platt = LogisticRegression(C=np.inf).fit(
        np.log(confidence / (1 - confidence))[:, None], correct
    )
    fitted = trust.Sigmoid.fit(confidence, correct.astype(float), prior=0.0)
    assert fitted.slope == pytest.approx(platt.coef_[0, 0], abs=1e-3)
    assert fitted.intercept == pytest.approx(platt.intercept_[0], abs=1e-3)
    held = trust.Sigmoid.fit(confidence, correct.astype(float), prior=1e7)
    assert np.allclose(held(confidence), confidence, atol=1e-3)


def test_the_pull_toward_the_confidence_lets_a_large_miss_through_and_damps_noise():
    rng = np.random.default_rng(4)
    confidence = rng.uniform(0.4, 0.75, 300)
    correct = rng.random(300) < confidence
    shifted = trust.fit_calibration(confidence + 0.2, correct, seed=0)
    assert shifted.method == "sigmoid" and shifted.prior is not None and shifted.prior <= 10
    assert abs(shifted(confidence + 0.2).mean() - correct.mean()) < 0.02
    # Calibrated already: what a sample's luck moves, the chosen pull moves half as far as
    # Platt's unpenalized sigmoid does.
    moved, platt_moved = [], []
    for _ in range(20):
        lucky = (rng.random(300) < confidence).astype(float)
        chosen = trust.fit_calibration(confidence, lucky, seed=0)
        platt = trust.Sigmoid.fit(confidence, lucky, prior=0.0)
        moved.append(np.abs(chosen(confidence) - confidence).mean())
        platt_moved.append(np.abs(platt(confidence) - confidence).mean())
    assert np.mean(moved) < 0.6 * np.mean(platt_moved)


def _brier(confidence: np.ndarray, correct: np.ndarray) -> float:
    return float(np.mean((confidence - correct) ** 2))


@pytest.mark.parametrize("seed", range(5))
def test_a_calibration_is_kept_only_where_it_scores_better_held_out(seed):
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.4, 0.75, 300)
    correct = rng.random(300) < confidence  # calibrated already: a fit can only chase noise
    calibration = trust.fit_calibration(confidence, correct, seed=0)
    if calibration.method == "none":
        assert np.array_equal(calibration.held_out, confidence)
    else:
        assert _brier(calibration.held_out, correct) < _brier(confidence, correct)
    assert abs(calibration(confidence).mean() - confidence.mean()) < 0.05


def test_without_known_rows_the_estimate_is_the_counted_interval():
    confidence = np.full(400, 0.8)
    counted = trust.accuracy_interval(320.0, 400.0)
    assert trust.estimated_accuracy(confidence) == counted
    # Residuals only widen it, and more so the less the known rows agree with the confidence.
    steady = trust.estimated_accuracy(confidence, np.full(200, 0.01) + np.tile([0, 0.02], 100))
    spread = trust.estimated_accuracy(confidence, np.tile([-0.8, 0.2], 100))
    assert steady.value == spread.value == pytest.approx(0.8)
    assert steady.low <= counted.low and steady.high >= counted.high
    assert spread.high - spread.low > steady.high - steady.low + 0.05


def test_the_estimates_interval_holds_the_truth_as_often_as_it_says_when_calibrated_on_a_sample():
    """Each trial: 800 rows labeled, 200 known; the confidence is calibrated by the known rows'
    shift (what Platt's sigmoid learns from a sample, luck included). The 90% interval holds
    the rows' true accuracy in about 90% of trials; Jeffreys' interval on the rows alone, which
    takes the calibration as exact, in far fewer."""
    rng = np.random.default_rng(7)
    holds, counted_holds, trials = 0, 0, 400
    for _ in range(trials):
        chance = rng.beta(6, 1.5, size=1000)  # each row's probability of being right
        right = rng.random(1000) < chance
        known, labeled = slice(0, 200), slice(200, None)
        shift = float((right[known] - chance[known]).mean())
        residuals = right[known] - (chance[known] + shift)
        confidence = np.clip(chance[labeled] + shift, 0, 1)
        truth = right[labeled].mean()
        interval = trust.estimated_accuracy(confidence, residuals)
        counted = trust.estimated_accuracy(confidence)
        holds += interval.low <= truth <= interval.high
        counted_holds += counted.low <= truth <= counted.high
    assert 0.85 <= holds / trials <= 0.95
    assert counted_holds / trials < 0.8


def test_better_probability_weighs_only_the_rows_where_two_labelings_differ():
    assert trust.better_probability(0, 0) == pytest.approx(0.5)
    assert trust.better_probability(9, 11) == pytest.approx(1 - trust.better_probability(11, 9))
    assert 0.2 < trust.better_probability(9, 11) < 0.5  # two rows apart: hardly evidence
    assert trust.better_probability(5, 25) < 0.01


def test_expected_gain_is_zero_for_an_answer_that_cannot_change_the_label():
    # Torn between neutral (1) and positive (2); the reviewer answers positive for both.
    blind = np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.05, 0.05, 0.9]])
    prior = np.array([[0.0, 0.5, 0.5]])
    assert trust.expected_gain(prior, blind)[0] == pytest.approx(0.0)


def test_expected_gain_of_a_perfect_reviewer_is_the_priors_error():
    prior = np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    gain = trust.expected_gain(prior, np.eye(3))
    assert gain == pytest.approx([0.5, 0.0])


def test_expected_gain_grows_with_the_reviewers_accuracy_and_the_rows_doubt():
    prior = np.array([[0.4, 0.35, 0.25], [0.8, 0.1, 0.1]])
    weak, strong = (
        np.full((3, 3), (1 - a) / 2) + np.eye(3) * (a - (1 - a) / 2) for a in (0.6, 0.9)
    )
    assert (trust.expected_gain(prior, strong) >= trust.expected_gain(prior, weak)).all()
    assert trust.expected_gain(prior, strong)[0] > trust.expected_gain(prior, strong)[1]
