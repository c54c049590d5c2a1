"""--review-self-check: an unsure answer is asked once more with the committee's votes shown."""

import json
from pathlib import Path

import pytest

from agent.domain import Purpose, Source
from agent.llm.client import LLMClient
from agent.llm.pricing import Budget
from agent.pipeline.review import LLMReviewer, ReviewItem
from agent.store.ledger import ledger_totals
from tests.fixtures.reviewers import KeywordLabeler

LABELS = ["positive", "negative", "neutral"]
KEYWORDS = {"love": "positive", "awful": "negative", "noon": "neutral"}
# The keyword answer is what the LLM says first; the committee says otherwise on "a" and "b".
ITEMS = [
    ReviewItem("a", "I love it", {"m1": "neutral", "m2": "neutral", "m3": "positive"}),
    ReviewItem("b", "awful", {"m1": "positive", "m2": "negative", "m3": "positive"}),
    ReviewItem("c", "lunch at noon", {"m1": "neutral", "m2": "neutral", "m3": "neutral"}),
]


def reviewer(
    tmp_path: Path,
    self_check: float | None,
    sure: float = 0.6,
    batch_size: int = 1,
    budget: Budget | None = None,
) -> LLMReviewer:
    client = LLMClient(
        KeywordLabeler(keywords=KEYWORDS, sure=sure, follows_votes=True),
        model="fake",
        cache_path=tmp_path / "llm_cache.sqlite",
        ledger_path=tmp_path / "ledger.jsonl",
        budget=budget,
    )
    return LLMReviewer(client, LABELS, "sentiment", batch_size=batch_size, self_check=self_check)


def purposes(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    return [json.loads(line)["purpose"] for line in lines]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_an_unsure_answer_is_asked_again_with_the_votes_and_the_second_answer_counts(
    tmp_path, batch_size
):
    verdicts = reviewer(tmp_path, self_check=0.7, batch_size=batch_size).review(ITEMS)
    # The anchored fake answers the committee's most-voted label once it is shown the votes.
    assert [v.label for v in verdicts] == ["neutral", "positive", "neutral"]
    assert all(v.source == Source.LLM for v in verdicts)
    assert verdicts[0].probabilities == pytest.approx(
        {"neutral": 0.6, "positive": 0.2, "negative": 0.2}
    )
    assert purposes(tmp_path).count(Purpose.REVIEW_SELF_CHECK) == 3


def test_sure_answers_and_samples_without_votes_are_not_asked_again(tmp_path):
    items = [*ITEMS[:2], ReviewItem("d", "I love noon", {})]
    verdicts = reviewer(tmp_path, self_check=0.7, sure=0.9).review(items)
    assert [v.label for v in verdicts] == ["positive", "negative", "positive"]
    assert Purpose.REVIEW_SELF_CHECK not in purposes(tmp_path)

    unsure = reviewer(tmp_path / "unsure", self_check=0.7, sure=0.6).review(items[2:])
    assert [v.label for v in unsure] == ["positive"]  # no votes: nothing to check against


def test_off_by_default_and_at_zero(tmp_path):
    for self_check, where in [(None, "none"), (0.0, "zero")]:
        verdicts = reviewer(tmp_path / where, self_check=self_check).review(ITEMS)
        assert [v.label for v in verdicts] == ["positive", "negative", "neutral"]
        assert set(purposes(tmp_path / where)) == {Purpose.REVIEW}


def test_the_self_check_is_budgeted_and_a_capped_one_keeps_the_first_answer(tmp_path):
    verdicts = reviewer(tmp_path, self_check=0.7, budget=Budget(max_calls=4)).review(ITEMS)
    # Three first answers, then one self-check fits under the cap: "a" changes, "b" keeps its own.
    assert [v.label for v in verdicts] == ["neutral", "negative", "neutral"]
    assert len(purposes(tmp_path)) == 4


def test_a_resumed_review_pays_for_no_self_check_twice(tmp_path):
    first = reviewer(tmp_path, self_check=0.7).review(ITEMS)
    paid = ledger_totals(tmp_path / "ledger.jsonl")["calls"]
    again = reviewer(tmp_path, self_check=0.7).review(ITEMS)
    assert again == first
    totals = ledger_totals(tmp_path / "ledger.jsonl")
    assert (paid, totals["calls"], totals["cache_hits"]) == (6, 6, 6)


def test_a_threshold_outside_zero_to_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="self_check"):
        reviewer(tmp_path, self_check=1.5)
