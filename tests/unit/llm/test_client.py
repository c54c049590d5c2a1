import json
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agent.llm.client import LLMClient
from agent.llm.endpoint import PLACEHOLDER_API_KEY, Endpoint
from agent.llm.pricing import Budget, BudgetExhausted, Price

PROMPT = [SystemMessage("label it"), HumanMessage("<text>great</text>")]


def answer(text: str, tokens_in: int = 10, tokens_out: int = 1) -> AIMessage:
    usage = {
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }
    return AIMessage(text, usage_metadata=usage)


def make_client(tmp_path: Path, answers: list[AIMessage], **kwargs) -> LLMClient:
    return LLMClient(
        GenericFakeChatModel(messages=iter(answers)),
        model=kwargs.pop("model", "gpt-4o-mini"),
        cache_path=tmp_path / "llm_cache.sqlite",
        ledger_path=tmp_path / "ledger.jsonl",
        **kwargs,
    )


def ledger(tmp_path: Path) -> list[dict]:
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_cache_answers_a_second_client_on_the_same_path_without_a_call(tmp_path):
    with make_client(tmp_path, [answer("positive")]) as first:
        assert first.complete(PROMPT, "review") == "positive"
    # An exhausted fake raises if called: a resumed run must be answered from the cache alone.
    with make_client(tmp_path, []) as resumed:
        assert resumed.complete(PROMPT, "review") == "positive"
        assert (resumed.usage.calls, resumed.usage.cache_hits) == (0, 1)


def test_the_cache_key_includes_the_model_and_the_answer_limit(tmp_path):
    with make_client(tmp_path, [answer("a"), answer("b"), answer("c")]) as client:
        client.complete(PROMPT, "review")
        assert client.complete(PROMPT, "review", max_tokens=5) == "b"
    with make_client(tmp_path, [answer("other model")], model="gpt-4o") as client:
        assert client.complete(PROMPT, "review") == "other model"


def test_ledger_records_every_call_with_tokens_cost_and_cache_hits(tmp_path):
    prices = {"gpt-4o-mini": Price(input=1.0, output=2.0)}
    with make_client(tmp_path, [answer("positive", 1000, 10)], prices=prices) as client:
        client.complete(PROMPT, "review")
        client.complete(PROMPT, "review")
        usage = client.usage
    paid, hit = ledger(tmp_path)
    assert paid["purpose"] == "review" and paid["model"] == "gpt-4o-mini"
    assert (paid["tokens_in"], paid["tokens_out"], paid["cache_hit"]) == (1000, 10, False)
    assert paid["cost_usd"] == pytest.approx(0.00102)
    assert paid["latency_s"] >= 0
    assert (hit["tokens_in"], hit["cost_usd"], hit["cache_hit"]) == (0, 0.0, True)
    assert (usage.calls, usage.cache_hits, usage.tokens_in, usage.tokens_out) == (1, 1, 1000, 10)
    assert usage.cost_usd == pytest.approx(0.00102)


def test_a_model_without_a_price_is_recorded_as_unknown_cost(tmp_path):
    with make_client(tmp_path, [answer("x")], model="some-new-model") as client:
        client.complete(PROMPT, "codegen")
    assert ledger(tmp_path)[0]["cost_usd"] is None


def test_local_endpoints_cost_nothing(tmp_path):
    local = Endpoint("http://127.0.0.1:1/v1", PLACEHOLDER_API_KEY, "qwen-local", local=True)
    with LLMClient.for_endpoint(local, tmp_path) as client:
        client.chat_model = GenericFakeChatModel(messages=iter([answer("x", 10**6, 10**6)]))
        client.complete(PROMPT, "review")
        assert client.usage.cost_usd == 0.0
    assert ledger(tmp_path)[0]["cost_usd"] == 0.0


def test_a_call_past_the_budget_is_never_sent(tmp_path):
    client = make_client(
        tmp_path, [answer("positive"), answer("negative")], budget=Budget(max_calls=1)
    )
    assert client.complete(PROMPT, "review") == "positive"
    assert client.complete(PROMPT, "review") == "positive"  # the cache answers for free
    with pytest.raises(BudgetExhausted):
        client.complete([HumanMessage("another")], "review")
    assert client.complete([HumanMessage("another")], "codegen") == "negative"  # not capped
    assert [e["purpose"] for e in ledger(tmp_path)] == ["review", "review", "codegen"]


def test_a_given_price_wins_and_the_local_server_is_free_by_default(tmp_path):
    local = Endpoint("http://127.0.0.1:1/v1", "k", "qwen", local=True)
    remote = Endpoint("https://api.example.com/v1", "k", "gpt-4o-mini")
    with LLMClient.for_endpoint(local, tmp_path) as client:
        assert client.price == Price(0.0, 0.0)
    with LLMClient.for_endpoint(remote, tmp_path) as client:
        assert client.price == Price(0.15, 0.60)
    with LLMClient.for_endpoint(remote, tmp_path, price=Price(1.0, 2.0)) as client:
        assert client.price == Price(1.0, 2.0)


def scored(text: str, logprobs: object) -> AIMessage:
    message = answer(text)
    message.response_metadata = {"logprobs": logprobs}
    return message


TOKENS = {
    "content": [
        {
            "token": "positive",
            "logprob": -0.1,
            "top_logprobs": [
                {"token": "positive", "logprob": -0.1},
                {"token": "neutral", "logprob": -2.5},
            ],
        }
    ]
}


def test_token_logprobs_come_back_with_the_answer_and_are_cached_under_their_own_key(tmp_path):
    with make_client(tmp_path, [scored("positive", TOKENS), answer("plain")]) as client:
        completion = client.complete_scored(PROMPT, "review", max_tokens=4, top_logprobs=5)
        assert completion.text == "positive"
        assert completion.logprobs == (("positive", {"positive": -0.1, "neutral": -2.5}),)
        # The plain answer to the same prompt is another request (the old cache keys hold).
        assert client.complete(PROMPT, "review", max_tokens=4) == "plain"
    with make_client(tmp_path, []) as resumed:
        again = resumed.complete_scored(PROMPT, "review", max_tokens=4, top_logprobs=5)
        assert again == completion
        assert resumed.complete(PROMPT, "review", max_tokens=4) == "plain"
        assert resumed.usage.calls == 0


@pytest.mark.parametrize(
    "logprobs",
    [None, {}, {"content": None}, {"content": "positive"}, {"content": [{"logprob": -1}]}],
)
def test_an_endpoint_without_usable_logprobs_gives_the_answer_alone(tmp_path, logprobs):
    with make_client(tmp_path, [scored("positive", logprobs)]) as client:
        completion = client.complete_scored(PROMPT, "review", top_logprobs=5)
        assert (completion.text, completion.logprobs) == ("positive", None)
