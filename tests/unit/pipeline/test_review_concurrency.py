"""--llm-concurrency: review requests in flight at once on a remote endpoint, with the verdicts'
order, the answer cache, the ledger and the budget exactly as one request at a time keeps them."""

from __future__ import annotations

import json

import pytest

from agent.domain import Source
from agent.llm.client import LLMClient
from agent.llm.endpoint import Endpoint
from agent.llm.pricing import Budget
from agent.pipeline.review import LLMReviewer, ReviewItem
from tests.fixtures.keywords import LABELS, WORDS
from tests.fixtures.llm import FakeOpenAI

# Keyword texts the fake labels by their word; every fifth text repeats an earlier one.
KEYWORDS = list(WORDS)


def items(n: int) -> list[ReviewItem]:
    texts = [f"sample {i} {KEYWORDS[i % len(KEYWORDS)]}" for i in range(n)]
    texts = [texts[i - 3] if i % 5 == 4 else t for i, t in enumerate(texts)]
    return [ReviewItem(id=str(i), text=t, votes={}) for i, t in enumerate(texts)]


def reviewer(fake: FakeOpenAI, tmp_path, concurrency: int, **budget) -> LLMReviewer:
    endpoint = Endpoint(base_url=fake.base_url, api_key="test", model="fake")
    client = LLMClient.for_endpoint(endpoint, tmp_path, budget=Budget(**budget))
    return LLMReviewer(client, LABELS, "sentiment of short texts", concurrency=concurrency)


def ledger(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]


def test_concurrent_review_keeps_order_and_pays_each_prompt_once(tmp_path):
    batch = items(30)
    with FakeOpenAI(LABELS, WORDS, latency_s=0.05) as fake:
        verdicts = reviewer(fake, tmp_path, concurrency=4).review(batch)
        assert 1 < fake.max_in_flight <= 4
    assert [v.id for v in verdicts] == [i.id for i in batch]
    expected = [WORDS[i.text.split()[-1]] for i in batch]
    assert [v.label for v in verdicts] == expected
    distinct = len({i.text for i in batch})
    assert distinct < len(batch)
    assert sum(fake.requests.values()) == distinct and max(fake.requests.values()) == 1
    lines = ledger(tmp_path)
    assert len(lines) == len(batch)
    assert sum(not e["cache_hit"] for e in lines) == distinct


@pytest.mark.parametrize("concurrency", [1, 6])
def test_the_call_cap_holds_with_calls_in_flight(tmp_path, concurrency):
    batch = items(20)
    with FakeOpenAI(LABELS, WORDS, latency_s=0.05) as fake:
        verdicts = reviewer(fake, tmp_path, concurrency, max_calls=7).review(batch)
    assert sum(fake.requests.values()) == 7
    by_source = [v.source for v in verdicts]
    assert by_source.count(Source.LLM) >= 7 and Source.CAPPED in by_source
    assert sum(not e["cache_hit"] for e in ledger(tmp_path)) == 7
    assert [v.id for v in verdicts] == [i.id for i in batch]


def test_a_429_is_retried_by_the_client_not_lost(tmp_path):
    batch = items(8)
    with FakeOpenAI(LABELS, WORDS, latency_s=0.02, rate_limit_first=3) as fake:
        verdicts = reviewer(fake, tmp_path, concurrency=4).review(batch)
    assert fake.rejected == 3
    assert all(v.source == Source.LLM for v in verdicts)
    assert [v.label for v in verdicts] == [WORDS[i.text.split()[-1]] for i in batch]
