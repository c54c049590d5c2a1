"""A single sample asked for one answer token first (what a run on the local server does): the
same verdicts as the whole answer, one call each where the token names one label, and the
whole answer asked for where it could start several."""

from __future__ import annotations

import pytest

from agent.domain import Source
from agent.llm.client import LLMClient
from agent.pipeline.review import LLMReviewer, ReviewItem, first_token_word
from tests.fixtures.keywords import LABELS, WORDS
from tests.fixtures.reviewers import KeywordLabeler

# Two labels that start with the same word, one that does not.
GRADED = ["very good", "very bad", "mixed"]
GRADED_WORDS = {"superb": "very good", "dreadful": "very bad", "meh": "mixed"}


def reviewer(tmp_path, labels, keywords, first_token: bool) -> LLMReviewer:
    labeler = KeywordLabeler(keywords=keywords, sure=0.8)
    folder = tmp_path / ("first" if first_token else "whole")
    folder.mkdir()
    client = LLMClient(labeler, "fake", folder / "cache.sqlite", folder / "ledger.jsonl")
    return LLMReviewer(client, labels, "sentiment of short texts", first_token=first_token)


@pytest.mark.parametrize(
    ("answer", "word"),
    [
        ("neg", "negative"),
        (" Positive", "positive"),
        ('"', None),  # a quote starts every label
        ("n", None),  # negative or neutral
        ("positively", None),  # longer than any label: not a label's first token
    ],
)
def test_first_token_word(answer, word):
    assert first_token_word(answer, LABELS) == word


def test_one_call_a_sample_and_the_same_verdicts_as_the_whole_answer(tmp_path):
    items = [ReviewItem(str(i), f"a {word} day", {}) for i, word in enumerate(WORDS)]
    first = reviewer(tmp_path, LABELS, WORDS, first_token=True)
    whole = reviewer(tmp_path, LABELS, WORDS, first_token=False)
    verdicts = first.review(items)
    expected = whole.review(items)
    assert [(v.label, v.source, v.probabilities) for v in verdicts] == [
        (v.label, v.source, v.probabilities) for v in expected
    ]
    assert [v.label for v in verdicts] == list(WORDS.values())
    assert first.client.usage.calls == len(items)


def test_a_first_token_that_starts_two_labels_asks_for_the_whole_answer(tmp_path):
    items = [ReviewItem(str(i), f"so {word}", {}) for i, word in enumerate(GRADED_WORDS)]
    first = reviewer(tmp_path, GRADED, GRADED_WORDS, first_token=True)
    verdicts = first.review(items)
    assert [(v.label, v.source) for v in verdicts] == [
        ("very good", Source.LLM),
        ("very bad", Source.LLM),
        ("mixed", Source.LLM),
    ]
    # "very" could start either (its answer alone names neither label): each of those two is
    # asked again for the whole answer; "mixed" is not.
    assert first.client.usage.calls == 5
