"""verify.check_peers: a script for a model no template runs must agree with the members whose
scripts passed beyond chance, on the probe rows."""

import numpy as np
import pandas as pd
import pytest

from agent.errors import Rejected
from agent.scripts.verify import MIN_PEER_KAPPA, MIN_PEER_ROWS, check_peers

LABELS = np.array(["non-toxic", "toxic"])


def series(values) -> pd.Series:
    return pd.Series(list(values), index=[str(i) for i in range(len(values))])


@pytest.fixture
def truth():
    return LABELS[np.random.default_rng(0).integers(0, 2, 64)]


def noisy(truth, share, seed):
    """`truth` with `share` of its rows flipped."""
    flip = np.random.default_rng(seed).random(len(truth)) < share
    return np.where(flip, np.where(truth == LABELS[0], LABELS[1], LABELS[0]), truth)


def test_a_model_read_right_passes_and_its_kappa_is_returned(truth):
    peers = [series(noisy(truth, 0.1, seed)) for seed in (1, 2, 3)]
    kappa = check_peers(series(noisy(truth, 0.1, 4)), peers)
    assert kappa is not None and kappa >= MIN_PEER_KAPPA


@pytest.mark.parametrize(
    "wrong",
    [
        lambda truth: noisy(truth, 1.0, 0),  # every label the other way round
        lambda truth: LABELS[np.random.default_rng(9).integers(0, 2, len(truth))],  # random
        lambda truth: np.full(len(truth), LABELS[0]),  # one label for every row
    ],
    ids=["inverted", "random", "constant"],
)
def test_a_model_read_wrong_is_rejected_at_the_peers_stage(truth, wrong):
    peers = [series(noisy(truth, 0.1, seed)) for seed in (1, 2, 3)]
    with pytest.raises(Rejected, match="Cohen's kappa") as rejected:
        check_peers(series(wrong(truth)), peers)
    assert rejected.value.stage == "peers"


def test_it_cannot_tell_without_peers_on_too_few_rows_or_a_plurality_of_one_label(truth):
    assert check_peers(series(truth), []) is None
    few = truth[: MIN_PEER_ROWS - 1]
    inverted = noisy(few, 1.0, 0)
    assert check_peers(series(inverted), [series(few)]) is None  # would be kappa -1
    constant = series(np.full(len(truth), LABELS[1]))
    assert check_peers(series(truth), [constant, constant]) is None


def test_votes_and_peers_are_matched_by_row_id_not_position(truth):
    peer = series(truth)
    shuffled = peer.sample(frac=1, random_state=0)
    assert check_peers(series(truth), [shuffled]) == pytest.approx(1.0)


def test_the_rejection_counts_each_label_on_both_sides(truth):
    """A section that says one label for every row is told so, not only its kappa."""
    peers = [series(truth)] * 3
    with pytest.raises(Rejected) as rejected:
        check_peers(series(np.full(len(truth), LABELS[0])), peers)
    theirs = ", ".join(f"{label} {(truth == label).sum()}" for label in LABELS)
    assert f"(its labels: non-toxic {len(truth)}; theirs: {theirs}; " in rejected.value.reason


def test_a_model_read_the_other_way_round_is_told_which_labels_it_swapped(truth):
    peers = [series(truth)] * 3
    with pytest.raises(Rejected) as rejected:
        check_peers(series(noisy(truth, 1.0, 0)), peers)
    toxic, non_toxic = (truth == "toxic").sum(), (truth == "non-toxic").sum()
    said = {
        f"it says non-toxic where they say toxic on {toxic} rows",
        f"it says toxic where they say non-toxic on {non_toxic} rows",
    }
    assert all(part in rejected.value.reason for part in said), rejected.value.reason
