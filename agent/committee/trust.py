"""How far each label source can be trusted, and the label each row's evidence supports best.

Pure functions over arrays (cleanlab's style: no I/O, no run directory); agent.pipeline.trust
feeds them from the run directory. Labels are column indices 0..K-1 of the task's label list.

The model (one Dawid-Skene step with the committee as the prior):

- the committee's distribution over labels for a row is a weighted mean (a linear opinion pool)
  of its members' distributions (each member's own probability per label where its script
  reports them, else its score on the label it voted and the rest spread evenly over the other
  labels), the weights fitted to the rows with evidence beyond the committee (pool_weights);
- a reviewer is a confusion matrix C[true, answer] = P(answer | true), counted on the rows whose
  label is known (the user's gold, a person's answer) or likely (rows the whole committee agreed
  on, from the audit sample), smoothed by a Dirichlet prior;
- a row's posterior is the committee's distribution times C[:, answer], normalised.

So a reviewer that never answers "neutral" gets a C whose "neutral" row puts its mass on the
labels it says instead, and its "positive" then counts for little against a committee leaning
neutral. Why not Dawid-Skene over every member's vote as separate workers (crowd-kit's
DawidSkene was tried): the members are fine-tuned from the same bases on the same kind of data,
so they agree for the same reasons; EM reads their agreement as reliability and rated the
reviewer at 14-19% where it was right 53% (tests/unit/pipeline/test_trust.py's setting). With
the committee as one prior per row, crowd-kit (which takes a class prior only) does not fit, so
the EM here is a dozen lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import beta as beta_distribution
from scipy.stats import chi2, norm
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedKFold

# Central interval reported for every accuracy (Jeffreys: Beta(k + 1/2, n - k + 1/2)).
INTERVAL = 0.90
# Pseudo-counts of the prior on a reviewer's confusion matrix: a reviewer with no evidence is
# taken as somewhat better than chance (2 on the diagonal against 0.5 off it), and a few dozen
# evidence rows outweigh that.
PRIOR_RIGHT, PRIOR_WRONG = 2.0, 0.5
# Fewer known rows than this and calibration keeps the confidence as it is: isotonic
# regression on a handful of points is a step function fitted to noise.
MIN_CALIBRATION_ROWS = 30
# Known rows from which calibration is isotonic rather than a sigmoid (see _calibrator).
ISOTONIC_ROWS = 1000
# Below that, the sigmoid's pull toward leaving the confidence as it is: the strengths
# fit_calibration chooses among, each the precision of a normal prior on slope and intercept.
SIGMOID_PRIORS = (0.0, 3.0, 10.0, 30.0, 100.0, 300.0)
CALIBRATION_FOLDS = 5
ECE_BINS = 10
EM_ROUNDS = 2  # see reviewer_confusion
# The reviewer's own probability of its answer at or above which the answer counts as sure.
SURE_ANSWER = 0.9
# Answers of one kind (sure, unsure) needed before they get their own confusion matrix.
MIN_STRATUM_ROWS = 30
# EM steps (at most) and the change in every weight below which pool_weights has converged.
POOL_EM_STEPS, POOL_TOLERANCE = 200, 1e-6
# Weights that explain the rows no better than equal ones at this level are not used.
POOL_TEST_LEVEL = 0.05


def member_distributions(
    votes: np.ndarray, scores: np.ndarray, n_labels: int, probs: np.ndarray | None = None
) -> np.ndarray:
    """(rows, k, K): each member's distribution over labels: its own probability per label where
    `probs` (rows, k, K) has one (a row of NaN where it has not), else its score on its vote
    (`votes`, `scores`: (rows, k)) and the rest spread evenly."""
    votes, scores = np.asarray(votes, dtype=int), np.clip(np.asarray(scores, dtype=float), 0, 1)
    rows, members = votes.shape
    spread = (1.0 - scores) / max(n_labels - 1, 1)
    out = np.repeat(spread[:, :, None], n_labels, axis=2)
    row_index, member_index = np.indices((rows, members))
    out[row_index, member_index, votes] = scores
    if probs is not None:
        own = np.asarray(probs, dtype=float)
        reported = np.isfinite(own).all(axis=2)
        out[reported] = own[reported]
    return out


def pool(members: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(rows, K): the linear opinion pool of `members` (rows, k, K) with `weights` (k,)."""
    return np.einsum("m,rmt->rt", np.asarray(weights, dtype=float), members)


def pool_weights(members: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(k,) the weights of the pool of `members` (rows, k, K) under which `truth` (rows, K: each
    row's distribution over its true label) is most likely: maximum likelihood for the weights
    of a mixture, by EM (each row's truth is shared among the members in proportion to
    w_m p_m(true), and w_m becomes its mean share), which never lowers the likelihood and keeps
    the weights on the simplex. Equal weights where there are no rows.

    Why weigh members at all: on 969 financial news sentences the demo committee's
    financial-news model was right on 74.7%, the tweets and movie-reviews models on 60.0% and
    55.3%; their equal mean was right on 64.7%, and on the rows routed to review it put 0.60 on
    its top label where that label was right on 48% (bench/trust.py)."""
    members, truth = np.asarray(members, dtype=float), np.asarray(truth, dtype=float)
    k = members.shape[1]
    weights = np.full(k, 1.0 / k)
    if not len(members):
        return weights
    for _ in range(POOL_EM_STEPS):
        pooled = pool(members, weights)
        share = weights[None, :, None] * members / np.maximum(pooled[:, None, :], 1e-12)
        updated = np.einsum("rt,rmt->m", truth, share)
        updated = updated / updated.sum()
        converged = np.abs(updated - weights).max() < POOL_TOLERANCE
        weights = updated
        if converged:
            break
    return weights


def pool_weights_p(members: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> float:
    """How likely equal weights would explain `truth` this much worse than `weights` by chance:
    the p-value of the likelihood-ratio test (twice the gain in log-likelihood against
    chi-square with k - 1 degrees of freedom); weights are used below POOL_TEST_LEVEL. Soft
    truths count as fractional rows, so the test is approximate (and misspecified: the truth
    is no pool; on equally good simulated members it passes about one time in seven, not one
    in twenty). It separates what bench/trust.py measured: 2·LLR 18.8 and 55.6 on financial
    news (members right on 75%, 60% and 55%; weighing them gained 1.6 and 2.2 points), 1.6 and
    9.6 on toxicity, 0.5-2.2 on tweets and 0.3 on the quick start (members about as good as
    each other; weighing them moved a tenth of the mass on the reviewer's habits and cost up
    to 1.1 points)."""
    members, truth = np.asarray(members, dtype=float), np.asarray(truth, dtype=float)
    k = members.shape[1]
    if not len(members) or k < 2:
        return 1.0

    def log_likelihood(w: np.ndarray) -> float:
        return float((truth * np.log(np.maximum(pool(members, w), 1e-12))).sum())

    statistic = 2 * (log_likelihood(weights) - log_likelihood(np.full(k, 1.0 / k)))
    return float(chi2.sf(statistic, k - 1))


def task_distribution(
    model_probs: list[dict[str, float]], label_map: dict[str, str], labels: list[str]
) -> np.ndarray:
    """(rows, K) over the task's labels from a model's probability per own label: each model
    label's probability goes to the task label it maps to, and each row is normalised (a
    multi-label model's sigmoid outputs need not sum to 1). NaN for a row with no mass on any
    task label, which then falls back to its vote and score."""
    position = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(model_probs), len(labels)))
    for row, probs in enumerate(model_probs):
        for label, p in probs.items():
            target = position.get(label_map.get(label, ""))
            if target is not None:
                out[row, target] += float(p)
    mass = out.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, out / mass, np.nan)


def confusion(truth: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """C[true, answer] = P(answer | true), Dirichlet-smoothed, from evidence rows: `truth` (rows,
    K) is each row's distribution over the true label (one-hot where the label is known) and
    `answers` (rows,) the reviewer's answer index."""
    truth = np.asarray(truth, dtype=float)
    n_labels = truth.shape[1]
    counts = np.full((n_labels, n_labels), PRIOR_WRONG)
    np.fill_diagonal(counts, PRIOR_RIGHT)
    for answer in range(n_labels):
        counts[:, answer] += truth[np.asarray(answers) == answer].sum(axis=0)
    return counts / counts.sum(axis=1, keepdims=True)


def reviewer_confusion(
    prior: np.ndarray, answers: np.ndarray, known: np.ndarray | None = None
) -> np.ndarray:
    """The reviewer's C over the rows it answered: `prior` (rows, K) the committee's
    distribution of each, `answers` (rows,) its answer, `known` (rows, K) one-hot where the
    row's label is known and all zeros elsewhere.

    A known row always counts as its label. The others count first as the committee's
    distribution, then, for EM_ROUNDS rounds of expectation-maximisation, as their posterior
    under the current C. Run to convergence, EM lets the reviewer confirm itself where no row is
    known (the bundled demo: 69.2% after two rounds, 66.0% converged, 67.0% for the plurality);
    no rounds at all under-use a good reviewer (tests/unit/pipeline/test_trust.py without gold:
    60.6% against 64.4% after two). Two was chosen on those settings and the synthetic one in
    tests/unit/committee/test_trust.py."""
    prior = np.asarray(prior, dtype=float)
    answers = np.asarray(answers, dtype=int)
    known = np.zeros_like(prior) if known is None else np.asarray(known, dtype=float)
    is_known = (known.sum(axis=1) > 0)[:, None]
    matrix = confusion(np.where(is_known, known, prior), answers)
    for _ in range(EM_ROUNDS):
        posterior = combine(prior, answers, matrix)
        matrix = confusion(np.where(is_known, known, posterior), answers)
    return matrix


def one_hot(indices: np.ndarray, n_labels: int) -> np.ndarray:
    return np.eye(n_labels)[np.asarray(indices, dtype=int)]


def combine(prior: np.ndarray, answers: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The posterior (rows, K): `prior` times the reviewer's likelihood of its answer; a row
    with answer -1 (not reviewed) keeps its prior."""
    answers = np.asarray(answers, dtype=int)
    posterior = np.array(prior, dtype=float, copy=True)
    asked = answers >= 0
    posterior[asked] *= matrix[:, answers[asked]].T
    return posterior / posterior.sum(axis=1, keepdims=True)


def answer_strata(answer_probabilities: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """(rows,) 0 where the reviewer gave no probability (or no answer), 1 for an unsure answer
    (its own probability of the answer below SURE_ANSWER), 2 for a sure one."""
    given = np.asarray(answer_probabilities, dtype=float)
    answers = np.asarray(answers, dtype=int)
    strata = np.zeros(len(answers), dtype=int)
    has = (answers >= 0) & ~np.isnan(given).any(axis=1)
    own = given[has, answers[has]]
    strata[has] = np.where(own >= SURE_ANSWER, 2, 1)
    return strata


def combine_by_strata(
    prior: np.ndarray, answers: np.ndarray, known: np.ndarray, strata: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(the reviewer's overall confusion matrix, every row's posterior), where answers of each
    kind (`strata`: sure, unsure, without a probability) with MIN_STRATUM_ROWS rows get their
    own matrix: a reviewer whose sure answers are right more often than its unsure ones is
    weighed so, as measured rather than as it says, and one whose confidence says nothing gets
    about the same matrix twice. `answers` is -1 on rows nobody reviewed (they keep the prior),
    `known` one-hot where a row's label is known."""
    prior, known = np.asarray(prior, dtype=float), np.asarray(known, dtype=float)
    answers, strata = np.asarray(answers, dtype=int), np.asarray(strata, dtype=int)
    asked = answers >= 0
    overall = reviewer_confusion(prior[asked], answers[asked], known[asked])
    posterior = combine(prior, answers, overall)
    kinds = set(strata[asked].tolist())
    for kind in kinds if len(kinds) > 1 else ():
        rows = asked & (strata == kind)
        if rows.sum() >= MIN_STRATUM_ROWS:
            matrix = reviewer_confusion(prior[rows], answers[rows], known[rows])
            posterior[rows] = combine(prior[rows], answers[rows], matrix)
    return overall, posterior


def expected_gain(prior: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(rows,) the value of one more answer from a reviewer with confusion matrix `matrix`:
    the expected accuracy of the row's label after its answer is combined with `prior` (the
    argmax of the posterior) less the accuracy of the prior's own argmax, both under `prior`.

    Never negative (an answer can be ignored); zero where no answer could change the label, as
    for a reviewer whose answers on the labels the committee hesitates between say nothing
    (one that never says "neutral", on a row torn between neutral and positive)."""
    prior = np.asarray(prior, dtype=float)
    joint = prior[:, :, None] * np.asarray(matrix, dtype=float)[None, :, :]  # [row, true, answer]
    after = joint.max(axis=1).sum(axis=1)
    return np.clip(after - prior.max(axis=1), 0.0, None)


def top_two_margin(prior: np.ndarray) -> np.ndarray:
    """(rows,) how far the committee's distribution puts its top label ahead of the next.

    Routing by margin skips the paper's rows where this is widest: on three finished runs
    (tweets twice, financial news), reviews of the routed rows with the widest fifth of the
    margins changed a label a quarter as often as those of the narrowest fifth."""
    ordered = np.sort(np.asarray(prior, dtype=float), axis=1)
    return ordered[:, -1] - ordered[:, -2]


@dataclass(frozen=True)
class Accuracy:
    """A source's accuracy: a point, its interval, and on how many rows."""

    value: float
    low: float
    high: float
    rows: float  # the (possibly fractional) evidence behind it

    def to_json(self) -> dict:
        return {
            "accuracy": None if np.isnan(self.value) else round(self.value, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "rows": round(self.rows, 1),
        }


def accuracy_interval(correct: float, rows: float) -> Accuracy:
    """Jeffreys interval for `correct` successes out of `rows` (fractional counts allowed)."""
    if rows <= 0:
        return Accuracy(value=float("nan"), low=0.0, high=1.0, rows=0.0)
    tail = (1 - INTERVAL) / 2
    a, b = correct + 0.5, rows - correct + 0.5
    return Accuracy(
        value=correct / rows,
        low=0.0 if correct <= 0 else float(beta_distribution.ppf(tail, a, b)),
        high=1.0 if correct >= rows else float(beta_distribution.ppf(1 - tail, a, b)),
        rows=rows,
    )


def estimated_accuracy(confidence: np.ndarray, residuals: np.ndarray | None = None) -> Accuracy:
    """The accuracy of labels given with calibrated `confidence`: its mean, with an interval for
    two errors. Which of the rows are right: Jeffreys' interval (accuracy_interval). And, where
    known rows measured the calibration (`residuals`: each known row's correctness less its
    held-out calibrated confidence), how far the confidence itself may be off: the standard
    error of the residuals' mean, added in quadrature (normal approximation).

    The calibration's own error is most of it on a few hundred known rows: on 126 simulated
    draws of 200 gold rows (python -m bench.trust --refit --draws 42, three sets), the truth
    fell outside Jeffreys' 90% interval in 45 draws and outside this one in 8."""
    confidence = np.asarray(confidence, dtype=float)
    counted = accuracy_interval(float(confidence.sum()), float(len(confidence)))
    if residuals is None or len(residuals) < 2 or not len(confidence):
        return counted
    value = counted.value
    rows_error = value * (1 - value) / len(confidence)
    calibration_error = float(np.var(residuals, ddof=1)) / len(residuals)
    half = float(norm.ppf(1 - (1 - INTERVAL) / 2)) * np.sqrt(rows_error + calibration_error)
    return Accuracy(
        value=value,
        low=max(0.0, min(counted.low, value - half)),
        high=min(1.0, max(counted.high, value + half)),
        rows=counted.rows,
    )


def better_probability(wins: int, losses: int) -> float:
    """How likely one labeling is the more accurate of two, from the rows where they differ
    and the truth is known: `wins` where only it is right, `losses` where only the other is.
    The share of such rows it wins has a Jeffreys posterior Beta(wins + 1/2, losses + 1/2);
    this is its mass above one half (0.5 with no evidence)."""
    return float(beta_distribution.sf(0.5, wins + 0.5, losses + 0.5))


def measured_accuracy(answers: pd.Series, truth: pd.Series) -> Accuracy:
    """Accuracy of `answers` (id -> label) on the ids `truth` knows."""
    shared = answers.index.intersection(truth.index)
    correct = float((answers.loc[shared] == truth.loc[shared]).sum())
    return accuracy_interval(correct, float(len(shared)))


@dataclass(frozen=True)
class Sigmoid:
    """Platt's sigmoid on the confidence's log-odds: P(right) = expit(slope * logit(c) + b)."""

    slope: float
    intercept: float  # b

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        return expit(self.slope * _log_odds(confidence) + self.intercept)

    @classmethod
    def fit(cls, confidence: np.ndarray, correct: np.ndarray, prior: float) -> Sigmoid:
        """The most probable sigmoid under a normal prior of precision `prior` on slope and
        intercept around the identity (1, 0): a logistic regression whose penalty pulls toward
        leaving the confidence as it is (scikit-learn's pulls the slope toward 0, a constant
        confidence, which is the wrong default for a posterior). `prior` 0 is Platt's fit."""
        log_odds = _log_odds(confidence)

        def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
            slope, intercept = params
            z = slope * log_odds + intercept
            error = expit(z) - correct
            value = np.sum(np.logaddexp(0.0, z) - correct * z)
            value += prior / 2 * ((slope - 1) ** 2 + intercept**2)
            gradient = [
                np.sum(error * log_odds) + prior * (slope - 1),
                np.sum(error) + prior * intercept,
            ]
            return float(value), np.asarray(gradient)

        found = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        return cls(slope=float(found.x[0]), intercept=float(found.x[1]))


Calibrator = IsotonicRegression | Sigmoid


@dataclass(frozen=True)
class Calibration:
    """Confidence as it comes out of the posterior, mapped to how often it is right."""

    method: str  # "isotonic", "sigmoid" or "none" (confidence kept as it is)
    model: Calibrator | None
    rows: int
    ece_before: float = float("nan")  # held out: each known row's error from a fit without it
    ece: float = float("nan")
    # Each known row's calibrated confidence from a fit without it (the confidence itself where
    # the calibration is "none"): what ece and a reliability diagram are measured on.
    held_out: np.ndarray = field(default_factory=lambda: np.empty(0))
    prior: float | None = None  # the sigmoid's pull toward the identity (SIGMOID_PRIORS)

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        return _predict(self.model, np.asarray(confidence, dtype=float))


def _predict(model: Calibrator | None, confidence: np.ndarray) -> np.ndarray:
    if model is None:
        return confidence
    if isinstance(model, IsotonicRegression):
        return model.predict(confidence)
    return model(confidence)


def _calibrator(confidence: np.ndarray, correct: np.ndarray, prior: float | None) -> Calibrator:
    """Isotonic regression (`prior` None) from ISOTONIC_ROWS known rows, below that a sigmoid
    on the confidence's log-odds: scikit-learn's guidance (isotonic overfits under ~1,000
    rows), seen here as a held-out calibration error that isotonic raised on 150 rows
    (0.080 -> 0.117)."""
    if prior is None:
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            confidence, correct
        )
    return Sigmoid.fit(confidence, correct, prior)


def _log_odds(confidence: np.ndarray) -> np.ndarray:
    clipped = np.clip(confidence, 1e-4, 1 - 1e-4)
    return np.log(clipped / (1 - clipped))


def fit_calibration(confidence: np.ndarray, correct: np.ndarray, seed: int) -> Calibration:
    """The calibration of `confidence` against `correct` on the known rows that brings the
    confidence closest to correctness on rows it was not fitted on (5-fold: each row's
    calibrated confidence from a fit without it, scored by the Brier score, which unlike the
    binned calibration error does not hang on where the bins fall); the confidence as it is
    ("none") where no fit beats it.

    Below ISOTONIC_ROWS the fits are sigmoids pulled toward the identity by each prior of
    SIGMOID_PRIORS, and the held-out score chooses how hard. On a few hundred rows the sample's
    luck moves a fit as much as the confidence's bias does, and a sample cannot tell the two
    apart: 150 gold tweets that were 68.7% right where the other rows were 74.0% moved an
    unpenalized sigmoid's confidence 4 points low, while tests/unit/pipeline/test_trust.py's
    committee is 11 points underconfident for real. A pull toward the identity that the
    held-out score sets lets a large, consistent miss through and damps a small one. On 126
    simulated draws of 200 gold rows (python -m bench.trust --refit --draws 42, three sets),
    the final labels' estimated accuracy came within 3 points of the truth in 100 draws, and
    their calibration error was at most 0.05 in 101, where an unpenalized sigmoid kept if it
    scored better held out (commit 9dec8ce) gave 96 and 93. (Of 200 rows about 73% right, the
    share right moves 3.1 points from one draw to the next: no estimate that learns from them
    can be within 3 points every time.)"""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    rows = len(confidence)
    before = expected_calibration_error(confidence, correct)
    unchanged = Calibration("none", None, rows, before, before, confidence)
    # Every fold's fit needs right and wrong rows.
    fewest = min(correct.sum(), rows - correct.sum())
    if rows < MIN_CALIBRATION_ROWS or fewest < CALIBRATION_FOLDS:
        return unchanged
    folds = list(
        StratifiedKFold(n_splits=CALIBRATION_FOLDS, shuffle=True, random_state=seed).split(
            confidence, correct
        )
    )
    # The strongest pull first, so that of fits that score alike the one nearest the
    # confidence as it is stands.
    priors: list[float | None] = (
        [None] if rows >= ISOTONIC_ROWS else [*sorted(SIGMOID_PRIORS, reverse=True)]
    )
    held_out = {prior: np.empty(rows) for prior in priors}
    for fitted_on, held in folds:
        for prior in priors:
            model = _calibrator(confidence[fitted_on], correct[fitted_on], prior)
            held_out[prior][held] = _predict(model, confidence[held])
    brier = {prior: float(np.mean((held_out[prior] - correct) ** 2)) for prior in priors}
    best = min(priors, key=brier.__getitem__)
    if brier[best] >= float(np.mean((confidence - correct) ** 2)):
        return unchanged
    model = _calibrator(confidence, correct, best)
    after = expected_calibration_error(held_out[best], correct)
    method = "isotonic" if best is None else "sigmoid"
    return Calibration(method, model, rows, before, after, held_out[best], best)


def calibration_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> pd.DataFrame:
    """Per equal-width confidence bin: rows, mean confidence, accuracy (a reliability diagram's
    data; empty bins left out)."""
    confidence = np.asarray(confidence, dtype=float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    frame = pd.DataFrame(
        {"bin": which, "confidence": confidence, "correct": np.asarray(correct, dtype=float)}
    )
    grouped = frame.groupby("bin").agg(
        rows=("correct", "size"), confidence=("confidence", "mean"), accuracy=("correct", "mean")
    )
    return grouped.reset_index()


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: the row-weighted gap between confidence and accuracy over equal-width bins."""
    if len(confidence) == 0:
        return float("nan")
    table = calibration_bins(confidence, correct, bins)
    gaps = (table["confidence"] - table["accuracy"]).abs() * table["rows"]
    return float(gaps.sum() / table["rows"].sum())
