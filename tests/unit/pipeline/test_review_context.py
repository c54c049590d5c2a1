"""A prompt past the endpoint's context window: the endpoint is fine, that one prompt is not, so
the review goes on (examples dropped, then the sample to a person) instead of stopping the run."""

from __future__ import annotations

import pytest

from agent.domain import Source
from agent.llm.client import LLMClient
from agent.llm.endpoint import Endpoint, LLMUnavailable, PromptTooLong
from agent.pipeline.review import TOO_LONG, Example, LLMReviewer, ReviewItem
from tests.fixtures.keywords import LABELS, WORDS
from tests.fixtures.llm import FakeOpenAI
from tests.fixtures.reviewers import KeywordLabeler

CONTEXT = 1500  # characters the fake takes in one prompt
EXAMPLES = tuple(Example(f"{word} {'x' * 150}", label) for word, label in WORDS.items())


def reviewer(fake: FakeOpenAI, tmp_path, batch_size: int = 1, **options) -> LLMReviewer:
    endpoint = Endpoint(base_url=fake.base_url, api_key="test", model="fake")
    client = LLMClient.for_endpoint(endpoint, tmp_path)
    return LLMReviewer(
        client, LABELS, "sentiment of short texts", shots=len(EXAMPLES), batch_size=batch_size,
        **options,
    )  # fmt: skip


def test_the_client_says_prompt_too_long_not_endpoint_down(tmp_path):
    with FakeOpenAI(LABELS, WORDS, context_chars=CONTEXT) as fake:
        plain = reviewer(fake, tmp_path)
        with pytest.raises(PromptTooLong, match="too long") as raised:
            plain.client.complete_scored(plain.messages_for("good " * 400), "review")
    assert not isinstance(raised.value, LLMUnavailable)


def test_a_prompt_past_the_context_is_asked_without_examples_then_goes_to_a_person(tmp_path):
    fits_alone = ReviewItem("short", "a good day", {}, examples=EXAMPLES)
    never_fits = ReviewItem("long", "bad " * 500, {}, examples=EXAMPLES)
    fits = ReviewItem("plain", "an awful day", {}, examples=EXAMPLES[:2])
    with FakeOpenAI(LABELS, WORDS, context_chars=CONTEXT) as fake:
        verdicts = reviewer(fake, tmp_path).review([fits_alone, never_fits, fits])
        # With its examples each of the first two is refused; alone, only the long one again.
        assert fake.too_long == 3
    assert [(v.id, v.label, v.source) for v in verdicts] == [
        ("short", "positive", Source.LLM),
        ("long", None, Source.NEEDS_HUMAN),
        ("plain", "negative", Source.LLM),
    ]
    assert verdicts[1].raw == TOO_LONG


def test_a_batch_past_the_context_is_asked_sample_by_sample(tmp_path):
    items = [ReviewItem(str(i), f"{word} {'y' * 300}", {}) for i, word in enumerate(WORDS)]
    with FakeOpenAI(LABELS, WORDS, context_chars=CONTEXT) as fake:
        verdicts = reviewer(fake, tmp_path, batch_size=len(items)).review(items)
        assert fake.too_long >= 1
    assert [v.label for v in verdicts] == list(WORDS.values())
    assert all(v.source == Source.LLM for v in verdicts)


def test_a_self_check_past_the_context_keeps_the_first_answer(tmp_path):
    item = ReviewItem("a", "a good day", {"m1": "negative", "m2": "negative"})
    labeler = KeywordLabeler(keywords=WORDS, sure=0.6, follows_votes=True)
    client = LLMClient(labeler, "fake", tmp_path / "cache.sqlite", tmp_path / "ledger.jsonl")
    checking = LLMReviewer(client, LABELS, "sentiment of short texts", self_check=0.9)
    # Room for the sample's own prompt, not for its answer and the votes after it.
    labeler.context_chars = sum(len(str(m.content)) for m in checking.messages_for(item.text))
    verdicts = checking.review([item])
    assert [(v.label, v.source) for v in verdicts] == [("positive", Source.LLM)]
    # Without the limit the same reviewer follows the votes: the check was asked and refused.
    labeler.context_chars = None
    assert checking.review([item])[0].label == "negative"
