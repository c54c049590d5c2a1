import pytest

from agent.committee.consensus import decide, majority_vote, route, uncertainty

LABELS = ["negative", "neutral", "positive"]


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        (["positive"] * 3, 0.0),
        (["positive", "positive", "negative"], 1 / 3),
        (["positive", "negative", "neutral"], 2 / 3),
        (["a", "a", "b", "b"], 0.5),
        (["a"], 0.0),
    ],
)
def test_uncertainty_is_one_minus_max_share(votes, expected):
    assert uncertainty(votes) == pytest.approx(expected)


def test_uncertainty_needs_votes():
    with pytest.raises(ValueError):
        uncertainty([])


def test_majority_vote_takes_most_common_label():
    assert majority_vote(["neutral", "positive", "positive"], [0.9, 0.6, 0.5], LABELS) == (
        "positive",
        2,
    )


def test_tie_broken_by_summed_confidence_then_label_order():
    assert majority_vote(["negative", "positive", "neutral"], [0.4, 0.9, 0.5], LABELS)[0] == (
        "positive"
    )
    assert majority_vote(["positive", "negative"], [0.7, 0.7], LABELS)[0] == "negative"


def test_default_epsilon_routes_every_disagreement_for_k3():
    # 1 - 2/3 is 0.33333333333333337 in floating point; it must still count as >= 1/3.
    assert route(1 - 2 / 3, 1 / 3) == "review"
    assert route(0.0, 1 / 3) == "direct"


def test_larger_epsilon_only_routes_full_disagreement():
    assert route(1 / 3, 0.5) == "direct"
    assert route(2 / 3, 0.5) == "review"


def test_decide_combines_vote_uncertainty_confidence_and_route():
    d = decide(["positive", "positive", "negative"], [0.8, 0.6, 0.9], LABELS, epsilon=0.5)
    assert d.label == "positive"
    assert d.uncertainty == pytest.approx(1 / 3)
    assert d.agreement == pytest.approx(2 / 3)
    assert d.confidence == pytest.approx(0.7)
    assert d.route == "direct"
