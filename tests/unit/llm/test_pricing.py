import json

import pytest

from agent.llm.endpoint import Endpoint
from agent.llm.pricing import DEFAULT_PRICES, FREE, Budget, Price, price_table


def test_a_price_is_dollars_per_million_tokens():
    assert Price(input=1.0, output=2.0).cost(1000, 10) == pytest.approx(0.00102)
    assert FREE.cost(10**6, 10**6) == 0.0


def test_the_local_server_is_free_and_a_remote_model_priced_by_name():
    local = Endpoint("http://127.0.0.1:1/v1", "k", "qwen", local=True)
    remote = Endpoint("https://api.example.com/v1", "k", "gpt-4o-mini")
    assert price_table(local) == {"qwen": FREE}
    assert price_table(remote) is DEFAULT_PRICES and "qwen" not in price_table(remote)


def test_budget_counts_paid_review_calls_from_the_ledger(tmp_path):
    entries = [
        {"purpose": "review-batch", "cost_usd": 0.25, "cache_hit": False},
        {"purpose": "review", "cost_usd": None, "cache_hit": False},
        {"purpose": "review", "cost_usd": 0.0, "cache_hit": True},
        {"purpose": "codegen-annotate", "cost_usd": 1.0, "cache_hit": False},
    ]
    path = tmp_path / "ledger.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in entries) + '\n{"purpose": "rev')
    budget = Budget.from_ledger(path, max_calls=3, max_cost_usd=1.0)
    assert (budget.calls, budget.cost_usd) == (2, 0.25)
    assert budget.allows(0.5) and not budget.allows(0.8)
    budget.spend(0.0)
    assert not budget.allows(0.0)  # the third call was the last
