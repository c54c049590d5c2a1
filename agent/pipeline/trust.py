"""The run's trust estimate: every source's reliability and every row's best-supported label.

Read from the run directory after each reviewed chunk and at the end (agent.committee.trust does
the maths): the committee's votes and scores, the reviewer's verdicts on routed and audit rows,
and the known labels (the user's gold rows, a person's answers, an oracle's).

Written, whole each time (an estimate changes as evidence comes in, and so may labels already
given), to `trust/posterior.parquet` (id, label, confidence, one probability column per label)
and `trust/reliability.json` (per source: its accuracy as estimated and as measured on known
rows, each with a 90% interval, and its confusion matrix; each member's weight in the
committee's distribution; the final labels' estimated accuracy; the reviewer against the
committee where it was asked; calibration).

The label of a row nobody reviewed stays the committee's plurality (the paper's rule); a
reviewed row gets the label its posterior favours. Never worse than the plurality: when known
rows exist, the whole estimate is cross-fitted on them (each fold's labels hidden in turn) and
compared with the plurality on the known rows where the two differ; where the plurality is
likely the better there (STAND_DOWN), every row keeps the plurality label and the report says
so. (A plain "fewer right on the known rows" was one coin toss: on 150 gold tweets the weighed
labels lost 9 to 11 on the 23 rows that differ and stood down, costing the other 350 rows 2.9
points, 71.1% where the weighed labels were 74.0%.) The same check decides whether the
reviewer's verdicts count with its lean divided out (`review_debias`, agent.committee.bias)
or as it answered them: where the correction was applied and known rows exist, both are
cross-fitted and the more accurate on the known rows is kept (`reviewer_debias` in
reliability.json); without known rows, the corrected verdicts count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd

from agent.committee import trust
from agent.domain import KNOWN_SOURCES, CommitteeMember, Route, Source
from agent.store.runstore import RunStore, read_json, write_json, write_parquet

REVIEWER = "llm"
CROSS_FOLDS = 5
# Known rows needed before the cross-fitted check may overrule the estimate, and before the
# reviewer is judged on known routed rows rather than by the model.
MIN_KNOWN = 30
# How likely, on the known rows, the plurality must be the more accurate before it stands
# instead of the weighed labels (see choose_standing).
STAND_DOWN = 0.8
# Rounds of (members' weights, reviewer's matrix) in fit. On bench/trust.py's financial news
# (969 rows, without and with 200 gold rows; the two runs whose weights pass the test), the
# final labels' accuracy with 0 rounds (every member alike) 75.6/78.2%, 1 round 77.6/79.8%,
# 2 rounds 77.2/80.4%, and calibration error 0.064/0.051, 0.054/0.037, 0.041/0.039.
POOL_ROUNDS = 2


@dataclass(frozen=True)
class Evidence:
    """Everything the run knows about its voted rows, aligned on `ids`."""

    labels: list[str]
    ids: pd.Index
    slugs: list[str]  # the committee's members, in the order of `members`' second axis
    members: np.ndarray  # (rows, k, K): each member's distribution
    plurality: pd.Series  # id -> the committee's plurality label
    routed: pd.Series  # id -> sent to review
    member_votes: dict[str, pd.Series]  # "slug@vN" -> id -> its vote, where that version voted
    reviewer: pd.Series  # id -> the LLM reviewer's verdict (routed and audit rows)
    # (rows, K) aligned on `ids`: the reviewer's own probability of each label where its
    # endpoint gave log-probs; NaN elsewhere.
    reviewer_probabilities: np.ndarray
    known: pd.Series  # id -> label given by gold, a person or an oracle
    # The reviewer's verdicts and probabilities as it gave them, before its lean was divided
    # out (hard/ and audit/ `answer`, `answer_probabilities`); the same where none was.
    answered: pd.Series
    answered_probabilities: np.ndarray

    @cached_property
    def prior(self) -> np.ndarray:
        """(rows, K): the committee's distribution as it voted, every member weighed alike."""
        return self.members.mean(axis=1)

    def as_answered(self) -> Evidence:
        """The same evidence with the reviewer's verdicts as it gave them."""
        return replace(
            self, reviewer=self.answered, reviewer_probabilities=self.answered_probabilities
        )

    def index_of(self, labels: pd.Series) -> np.ndarray:
        return pd.Index(self.labels).get_indexer(labels)


def committee_members(frame: pd.DataFrame, slugs: Sequence[str], labels: list[str]) -> np.ndarray:
    """(rows, k, K): each member's distribution over the rows of voted chunks (chunks/*.parquet):
    its own probabilities where its votes carried them (`SLUG.probs`, in the task's label
    order), else its vote and score."""
    index = pd.Index(labels)
    probs = np.full((len(frame), len(slugs), len(labels)), np.nan)
    for member, slug in enumerate(slugs):
        # A chunk voted without them reads as NaN where others have a vector.
        for row, dist in enumerate(frame.get(f"{slug}.probs", [])):
            if isinstance(dist, np.ndarray | list) and len(dist) == len(labels):
                probs[row, member] = dist
    return trust.member_distributions(
        np.column_stack([index.get_indexer(frame[f"{s}.label"]) for s in slugs]),
        np.column_stack([frame[f"{s}.score"].to_numpy(dtype=float) for s in slugs]),
        len(labels),
        probs,
    )


def committee_prior(frame: pd.DataFrame, slugs: Sequence[str], labels: list[str]) -> np.ndarray:
    """(rows, K): the committee's distribution as it voted, every member weighed alike."""
    return committee_members(frame, slugs, labels).mean(axis=1)


def collect(store: RunStore, committee: Sequence[CommitteeMember]) -> Evidence:
    labels = list(store.task().labels)
    slugs = [m.slug for m in committee]
    chunks = [pd.read_parquet(p) for p in store.voted_chunks()]
    votes = pd.concat(chunks, ignore_index=True).set_index("id")
    member_votes: dict[str, list[pd.Series]] = {}
    for chunk in chunks:
        versions = json.loads(chunk["versions"].iloc[0]) if len(chunk) else {}
        for slug in slugs:
            name = f"{slug}@v{versions.get(slug, 0)}"
            member_votes.setdefault(name, []).append(chunk.set_index("id")[f"{slug}.label"])
    reviews = [pd.read_parquet(p) for p in [*store.hard_chunks(), *store.audit_chunks()]]
    reviewed = (
        pd.concat(reviews, ignore_index=True)
        if reviews
        else pd.DataFrame({"id": [], "label": [], "source": []})
    )
    by_reviewer = reviewed[reviewed["source"] == Source.LLM].drop_duplicates("id")
    as_given = by_reviewer
    if "answer" in by_reviewer:
        given = by_reviewer["answer"].notna()
        as_given = by_reviewer.assign(
            label=by_reviewer["label"].where(~given, by_reviewer["answer"]),
            probabilities=by_reviewer["probabilities"].where(
                ~given, by_reviewer["answer_probabilities"]
            ),
        )
    by_expert = reviewed[reviewed["source"].isin(KNOWN_SOURCES)].drop_duplicates("id")
    gold = store.gold_evidence()
    known = pd.concat([gold, by_expert.set_index("id")["label"].drop(gold.index, errors="ignore")])
    return Evidence(
        reviewer_probabilities=_probabilities(by_reviewer, votes.index, labels),
        labels=labels,
        ids=votes.index,
        slugs=slugs,
        members=committee_members(votes, slugs, labels),
        plurality=votes["label"].astype(str),
        routed=votes["route"] == Route.REVIEW,
        member_votes={name: pd.concat(parts) for name, parts in member_votes.items()},
        reviewer=by_reviewer.set_index("id")["label"].astype(str),
        known=known[known.index.isin(votes.index)].astype(str),  # a blank row has no vote
        answered=as_given.set_index("id")["label"].astype(str),
        answered_probabilities=_probabilities(as_given, votes.index, labels),
    )


def _probabilities(reviewed: pd.DataFrame, ids: pd.Index, labels: list[str]) -> np.ndarray:
    """(rows, K) on `ids` from the reviews' `probabilities` column (JSON objects); NaN for rows
    without (reviews from before the column, an endpoint without log-probs)."""
    found = np.full((len(ids), len(labels)), np.nan)
    if "probabilities" not in reviewed:
        return found
    position = ids.get_indexer(reviewed["id"])
    for row, given in zip(position, reviewed["probabilities"], strict=True):
        if row >= 0 and isinstance(given, str):
            probabilities = json.loads(given)
            found[row] = [float(probabilities.get(label, 0.0)) for label in labels]
    return found


@dataclass(frozen=True)
class Labels:
    """One fit: the reviewer's confusion matrix, every row's posterior and chosen label."""

    matrix: np.ndarray
    posterior: np.ndarray  # (rows, K), aligned on Evidence.ids
    weights: dict[str, float]  # slug -> its weight in the committee's distribution
    # The test against equal weights of the weights in use, or of the first round's where none
    # passed it (None: no rows to fit them on).
    weights_p: float | None
    weights_used: bool
    label: pd.Series  # id -> label
    confidence: np.ndarray  # the posterior's probability of that label


def fit(evidence: Evidence, hidden: pd.Index | None = None) -> Labels:
    """The members' weights and the reviewer's matrix from the rows with evidence beyond the
    committee (known rows, less `hidden`, as their label; reviewed rows as their posterior),
    then every row's posterior; a reviewed row takes the label its posterior favours.

    Weights and matrix are fitted in turn, POOL_ROUNDS times from equal weights: each round
    weighs the members by how likely their pool makes the last round's posterior (or the
    known label), then refits the reviewer against the reweighed committee; weights that fail
    trust.pool_weights_p's test (p at or above POOL_TEST_LEVEL) are not used, and the rounds
    stop there."""
    known = evidence.known.drop(hidden, errors="ignore") if hidden is not None else evidence.known
    n_labels = len(evidence.labels)
    known_rows = np.zeros_like(evidence.prior)
    is_known = evidence.ids.isin(known.index)
    known_rows[is_known] = trust.one_hot(
        evidence.index_of(known.loc[evidence.ids[is_known]]), n_labels
    )
    answers = evidence.index_of(evidence.reviewer.reindex(evidence.ids).fillna(""))
    # The reviewer's matrix counts a known row only where the reviewer answered it.
    answered_known = np.where((answers >= 0)[:, None], known_rows, 0.0)
    strata = trust.answer_strata(evidence.reviewer_probabilities, answers)
    weights = np.full(len(evidence.slugs), 1.0 / len(evidence.slugs))
    prior = evidence.prior
    matrix, posterior = trust.combine_by_strata(prior, answers, answered_known, strata)
    with_evidence = is_known | (answers >= 0)
    members = evidence.members[with_evidence]
    weights_p, weights_used = None, False
    for _ in range(POOL_ROUNDS if with_evidence.any() else 0):
        truth = np.where(is_known[:, None], known_rows, posterior)[with_evidence]
        fitted = trust.pool_weights(members, truth)
        p = trust.pool_weights_p(members, truth, fitted)
        if p >= trust.POOL_TEST_LEVEL:
            # The last round's weights and posterior stand (equal ones in the first round).
            weights_p = weights_p if weights_used else p
            break
        weights, weights_p, weights_used = fitted, p, True
        prior = trust.pool(evidence.members, weights)
        matrix, posterior = trust.combine_by_strata(prior, answers, answered_known, strata)
    chosen = np.where(answers >= 0, posterior.argmax(axis=1), evidence.index_of(evidence.plurality))
    label = pd.Series(np.array(evidence.labels)[chosen], index=evidence.ids)
    label.update(known)
    return Labels(
        matrix=matrix,
        posterior=posterior,
        label=label,
        confidence=posterior[np.arange(len(chosen)), chosen],
        weights=dict(zip(evidence.slugs, weights.tolist(), strict=True)),
        weights_p=weights_p,
        weights_used=weights_used,
    )


def _reviewer_verdicts(
    evidence: Evidence, seed: int
) -> tuple[Evidence, dict | None, CrossFit | None]:
    """The evidence with the reviewer's verdicts as corrected for its lean, or as it answered
    them where, cross-fitted on the known rows, those give the more accurate labels; the two
    accuracies and the kept evidence's cross-fit (both None when there was nothing to compare)."""
    if len(evidence.known) < MIN_KNOWN:
        return evidence, None, None
    as_answered = evidence.as_answered()
    if _same_verdicts(evidence, as_answered):
        return evidence, None, None
    candidates = {"corrected": evidence, "as answered": as_answered}
    held = {name: _cross_fitted(e, seed) for name, e in candidates.items()}
    truth = evidence.known.loc[held["corrected"].label.index]
    measured = {name: trust.measured_accuracy(h.label, truth) for name, h in held.items()}
    better = measured["as answered"].value > measured["corrected"].value
    kept = "as answered" if better else "corrected"
    accuracies = {name: accuracy.to_json() for name, accuracy in measured.items()}
    return candidates[kept], {"kept": kept, **accuracies}, held[kept]


def _same_verdicts(one: Evidence, other: Evidence) -> bool:
    return one.reviewer.equals(other.reviewer) and np.array_equal(
        one.reviewer_probabilities, other.reviewer_probabilities, equal_nan=True
    )


@dataclass(frozen=True)
class CrossFit:
    """Each known row's label and posterior with its own label hidden (k-fold)."""

    label: pd.Series  # id -> label
    posterior: pd.DataFrame  # id -> probability per label (columns: the task's labels)

    def confidence(self, labels: pd.Series) -> np.ndarray:
        """The held-out posterior's probability of `labels` (id -> label) on these rows."""
        chosen = self.posterior.columns.get_indexer(labels.loc[self.posterior.index])
        return self.posterior.to_numpy()[np.arange(len(chosen)), chosen]


def _cross_fitted(evidence: Evidence, seed: int) -> CrossFit:
    """Every known row fitted with its own label hidden, CROSS_FOLDS folds in turn."""
    ids = evidence.known.index.to_numpy()
    order = np.random.default_rng(seed).permutation(len(ids))
    position = pd.Series(np.arange(len(evidence.ids)), index=evidence.ids)
    labels, posteriors = [], []
    for fold in range(CROSS_FOLDS):
        hidden = pd.Index(ids[order[fold::CROSS_FOLDS]])
        # With their labels hidden, fit() chooses these rows as it chooses any unknown row.
        fitted = fit(evidence, hidden)
        labels.append(fitted.label.loc[hidden])
        rows = fitted.posterior[position.loc[hidden].to_numpy()]
        posteriors.append(pd.DataFrame(rows, index=hidden, columns=evidence.labels))
    return CrossFit(pd.concat(labels), pd.concat(posteriors))


def choose_standing(held: CrossFit, evidence: Evidence) -> tuple[str, dict]:
    """Which labels stand: the weighed ones ("posterior"), or the committee's ("plurality") where
    the known rows make it likely (STAND_DOWN) that the plurality is the more accurate, judged
    on the known rows where the two differ (the rest say nothing about which is better), each
    weighed label cross-fitted; with the counts behind the choice."""
    truth = evidence.known.loc[held.label.index]
    plurality = evidence.plurality.loc[held.label.index]
    differ = held.label != plurality
    wins = int(((held.label == truth) & differ).sum())
    losses = int(((plurality == truth) & differ).sum())
    better = trust.better_probability(wins, losses)
    standing = "plurality" if 1 - better >= STAND_DOWN else "posterior"
    return standing, {
        "rows_differing": int(differ.sum()),
        "posterior_right": wins,
        "plurality_right": losses,
        "posterior_better_probability": round(better, 4),
    }


def update(store: RunStore, committee: Sequence[CommitteeMember]) -> dict:
    """Re-estimate every source and every row's label; write trust/; return the reliability."""
    if not store.voted_chunks():
        return {}
    seed = store.task().seed
    evidence, debias, held = _reviewer_verdicts(collect(store, committee), seed)
    reliability: dict = {"labels": evidence.labels, "known_rows": len(evidence.known)}
    if debias:
        reliability["reviewer_debias"] = debias
    fitted = fit(evidence)
    reliability["committee_weights"] = {slug: round(w, 4) for slug, w in fitted.weights.items()}
    if fitted.weights_p is not None:
        reliability["committee_weights_test"] = {
            "p": round(fitted.weights_p, 4),
            "used": fitted.weights_used,
        }
    known = evidence.known
    standing, calibration = "posterior", trust.Calibration("none", None, 0)
    # How far the calibrated confidence is off on known rows; without them the calibration is
    # unmeasured, and the estimate's interval counts only which rows are right.
    residuals = None
    if len(known) >= MIN_KNOWN:
        held = held or _cross_fitted(evidence, seed)
        truth = known.loc[held.label.index]
        check = {
            "posterior": trust.measured_accuracy(held.label, truth),
            "plurality": trust.measured_accuracy(evidence.plurality, truth),
        }
        standing, paired = choose_standing(held, evidence)
        reliability["known_rows_check"] = {
            **{k: v.to_json() for k, v in check.items()},
            **paired,
        }
        # Calibrated as the labels that stand: their own held-out confidence and correctness.
        kept = held.label if standing == "posterior" else evidence.plurality.loc[truth.index]
        correct = (kept == truth).to_numpy()
        calibration = trust.fit_calibration(held.confidence(kept), correct, seed)
        # Held out, though the pull was chosen on the same folds: a little optimistic.
        residuals = correct - calibration.held_out
        reliability["calibration"] = {
            "rows": len(truth),
            "method": calibration.method,
            "prior": calibration.prior,
            "ece_before": round(calibration.ece_before, 4),
            "ece": round(calibration.ece, 4),
            "bins": trust.calibration_bins(calibration.held_out, correct)
            .round(4)
            .to_dict("records"),
        }
    label, confidence = fitted.label, fitted.confidence
    if standing == "plurality":
        label = evidence.plurality.copy()
        label.update(known)
        confidence = fitted.posterior[np.arange(len(label)), evidence.index_of(label)]
    confidence = calibration(confidence)
    is_known = evidence.ids.isin(known.index)
    confidence[is_known] = 1.0
    reliability["final_labels"] = {
        "standing": standing,
        "estimated_accuracy": trust.estimated_accuracy(confidence[~is_known], residuals).to_json(),
    }
    if not evidence.reviewer.empty:
        # What routing by expected gain weighs the next chunk's rows with (reviewer_matrix()).
        reliability["reviewer_matrix"] = fitted.matrix.round(6).tolist()
    reliability["reviewer_vs_committee"] = _reviewer_vs_committee(evidence, fitted)
    reliability["sources"] = _sources(evidence, fitted)
    frame = pd.DataFrame(fitted.posterior.round(4), columns=[f"p.{y}" for y in evidence.labels])
    frame.insert(0, "id", evidence.ids.to_numpy())
    frame.insert(1, "label", label.loc[evidence.ids].to_numpy())
    frame.insert(2, "confidence", np.round(confidence, 4))
    write_parquet(frame, store.posterior_path)
    write_json(reliability, store.reliability_path)
    return reliability


def reviewer_matrix(store: RunStore) -> np.ndarray | None:
    """The reviewer's confusion matrix as last estimated, or None before it answered a row."""
    if not store.reliability_path.is_file():
        return None
    matrix = read_json(store.reliability_path).get("reviewer_matrix")
    return None if matrix is None else np.asarray(matrix, dtype=float)


def _reviewer_vs_committee(evidence: Evidence, fitted: Labels) -> dict:
    """On the routed rows the reviewer answered: its accuracy and the plurality's, measured on
    known rows where at least MIN_KNOWN of them exist, else as the model estimates them;
    `worse` when the reviewer loses."""
    routed = evidence.reviewer.index.intersection(evidence.ids[evidence.routed.to_numpy()])
    if not len(routed):
        return {}
    known = routed.intersection(evidence.known.index)
    if len(known) >= MIN_KNOWN:
        basis = "known rows"
        mine = trust.measured_accuracy(evidence.reviewer.loc[known], evidence.known)
        theirs = trust.measured_accuracy(evidence.plurality.loc[known], evidence.known)
    else:
        # Each as the posterior expects it: the mean probability it gives the answer.
        basis = "estimate"
        where = evidence.ids.get_indexer(routed)
        rows = np.arange(len(routed))
        mine, theirs = (
            trust.accuracy_interval(
                float(fitted.posterior[where][rows, evidence.index_of(answers)].sum()),
                float(len(routed)),
            )
            for answers in (evidence.reviewer.loc[routed], evidence.plurality.loc[routed])
        )
    return {
        "basis": basis,
        "rows": len(routed),
        "reviewer": mine.to_json(),
        "plurality": theirs.to_json(),
        "worse": bool(mine.value < theirs.value),
        "confusion": pd.DataFrame(fitted.matrix, index=evidence.labels, columns=evidence.labels)
        .round(4)
        .to_dict(orient="index"),
    }


def _sources(evidence: Evidence, fitted: Labels) -> dict[str, dict]:
    """Per source (each SLM version, the reviewer): rows answered, accuracy as the posterior
    expects it and as measured on known rows, and its confusion matrix C[true, answer] with
    each row's truth the posterior, or its label where known — so a blind spot (a label the
    source never gives) shows as a low recall on that label, whatever its overall accuracy."""
    position = pd.Series(np.arange(len(evidence.ids)), index=evidence.ids)
    n_labels = len(evidence.labels)
    out = {}
    for name, given in [*evidence.member_votes.items(), (REVIEWER, evidence.reviewer)]:
        if given.empty:
            continue
        where = position.loc[given.index].to_numpy()
        answers = evidence.index_of(given)
        expected = fitted.posterior[where, answers].sum()
        truth = fitted.posterior[where].copy()
        is_known = given.index.isin(evidence.known.index)
        truth[is_known] = trust.one_hot(
            evidence.index_of(evidence.known.loc[given.index[is_known]]), n_labels
        )
        matrix = trust.confusion(truth, answers)
        out[name] = {
            "rows": len(given),
            "expected": trust.accuracy_interval(float(expected), float(len(given))).to_json(),
            "measured": trust.measured_accuracy(given, evidence.known).to_json(),
            "recall": dict(zip(evidence.labels, np.diag(matrix).round(4).tolist(), strict=True)),
            "confusion": pd.DataFrame(matrix, index=evidence.labels, columns=evidence.labels)
            .round(4)
            .to_dict(orient="index"),
        }
    return out
