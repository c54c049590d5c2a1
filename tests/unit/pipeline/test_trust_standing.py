"""When the weighed labels stand down to the committee's plurality: judged on the known rows
where the two differ, and only where the plurality is likely the better there."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agent.pipeline import trust

LABELS = ["negative", "neutral", "positive"]


def _evidence(truth: pd.Series, plurality: pd.Series) -> trust.Evidence:
    ids = truth.index
    empty = pd.Series(dtype=str)
    nothing = np.full((len(ids), len(LABELS)), np.nan)
    return trust.Evidence(
        labels=LABELS,
        ids=ids,
        slugs=["member"],
        members=np.full((len(ids), 1, len(LABELS)), 1 / 3),
        plurality=plurality,
        routed=pd.Series(False, index=ids),
        member_votes={},
        reviewer=empty,
        reviewer_probabilities=nothing,
        known=truth,
        answered=empty,
        answered_probabilities=nothing,
    )


def _setting(wins: int, losses: int, both_wrong: int = 0, agreed: int = 100):
    """Known rows: `agreed` where the two labelings agree (and are right), `wins` where only
    the weighed labels are right, `losses` where only the plurality is, `both_wrong` where they
    differ and neither is."""
    rows = agreed + wins + losses + both_wrong
    ids = pd.Index([f"r{i}" for i in range(rows)])
    truth = pd.Series("positive", index=ids)
    weighed, plurality = truth.copy(), truth.copy()
    start = agreed
    plurality.iloc[start : start + wins] = "negative"
    start += wins
    weighed.iloc[start : start + losses] = "negative"
    start += losses
    weighed.iloc[start : start + both_wrong] = "negative"
    plurality.iloc[start : start + both_wrong] = "neutral"
    posterior = pd.DataFrame(
        np.eye(len(LABELS))[pd.Index(LABELS).get_indexer(weighed)], index=ids, columns=LABELS
    )
    return _evidence(truth, plurality), trust.CrossFit(weighed, posterior)


def test_a_clear_loss_on_the_differing_rows_stands_down_with_its_counts():
    evidence, held = _setting(wins=5, losses=25, both_wrong=3)
    standing, paired = trust.choose_standing(held, evidence)
    assert standing == "plurality"
    assert paired["rows_differing"] == 33
    assert (paired["posterior_right"], paired["plurality_right"]) == (5, 25)
    assert paired["posterior_better_probability"] < 0.01


@pytest.mark.parametrize(("wins", "losses"), [(9, 11), (11, 9), (0, 0), (30, 2)])
def test_a_near_tie_or_a_win_keeps_the_weighed_labels(wins, losses):
    """9 to 11 is what stood down on 150 gold tweets and cost the other rows 2.9 points."""
    evidence, held = _setting(wins, losses)
    standing, paired = trust.choose_standing(held, evidence)
    assert standing == "posterior"
    assert paired["rows_differing"] == wins + losses


def _standing_of(setting):
    evidence, held = setting
    return trust.choose_standing(held, evidence)


def test_the_rows_where_both_agree_do_not_count():
    few, _ = _standing_of(_setting(wins=2, losses=12, agreed=10))
    many, _ = _standing_of(_setting(wins=2, losses=12, agreed=5000))
    assert few == many == "plurality"
