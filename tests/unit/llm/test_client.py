import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agent.llm.client import (
    DEFAULT_REMOTE_MODEL,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_GGUF,
    ENV_MODEL,
    PLACEHOLDER_API_KEY,
    Budget,
    BudgetExhausted,
    Endpoint,
    LLMClient,
    LLMUnavailable,
    LocalServer,
    Price,
    check_endpoint,
    join_parts,
    make_chat_model,
    resolve_endpoint,
    resolve_gguf,
)

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


@pytest.fixture
def no_llm_env(monkeypatch):
    for name in (ENV_BASE_URL, ENV_API_KEY, ENV_MODEL, ENV_GGUF):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_endpoint_configured_means_local_server(no_llm_env):
    assert resolve_endpoint() is None


def test_base_url_alone_gets_a_placeholder_key_and_the_default_model(no_llm_env):
    no_llm_env.setenv(ENV_BASE_URL, "http://gpu-box:8000/v1/")
    endpoint = resolve_endpoint()
    assert endpoint == Endpoint("http://gpu-box:8000/v1", PLACEHOLDER_API_KEY, DEFAULT_REMOTE_MODEL)


def test_flags_override_environment(no_llm_env):
    no_llm_env.setenv(ENV_API_KEY, "env-key")
    no_llm_env.setenv(ENV_MODEL, "env-model")
    endpoint = resolve_endpoint(api_key="flag-key", model="flag-model")
    assert endpoint == Endpoint(None, "flag-key", "flag-model")
    assert endpoint.display_url == "https://api.openai.com/v1"


def test_chat_model_is_deterministic_and_retries():
    model = make_chat_model(Endpoint("http://127.0.0.1:1/v1", "k", "m"), max_retries=5)
    assert (model.temperature, model.max_retries, model.model_name) == (0, 5, "m")
    assert model.openai_api_base == "http://127.0.0.1:1/v1"


def test_check_endpoint_names_the_url_and_the_fix_when_nothing_answers():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(LLMUnavailable) as raised:
            check_endpoint(Endpoint(url, "k", "m"), timeout_s=2)
    message = str(raised.value)
    assert url in message and ENV_BASE_URL in message
    assert "\n" not in message


def test_parts_are_joined_in_order_atomically(tmp_path):
    parts = []
    for number, content in enumerate([b"GGUF", b"-middle-", b"end"], start=1):
        parts.append(tmp_path / f"part{number:02d}.bin")
        parts[-1].write_bytes(content)
    target = tmp_path / "models" / "m.gguf"
    assert join_parts(parts, target, expected_size=15) == target
    assert target.read_bytes() == b"GGUF-middle-end"
    assert [p.name for p in target.parent.iterdir()] == ["m.gguf"]


def test_a_joined_file_of_the_wrong_size_is_never_left_behind(tmp_path):
    part = tmp_path / "part01.bin"
    part.write_bytes(b"short")
    target = tmp_path / "models" / "m.gguf"
    with pytest.raises(LLMUnavailable, match="expected 99"):
        join_parts([part], target, expected_size=99)
    assert list(target.parent.iterdir()) == []


def test_gguf_path_from_the_environment(no_llm_env, tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    no_llm_env.setenv(ENV_GGUF, str(gguf))
    assert resolve_gguf() == gguf
    with pytest.raises(LLMUnavailable, match=r"qwen2\.5-coder-1\.5b"):
        resolve_gguf(str(tmp_path / "missing.gguf"))


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
def test_a_server_that_dies_at_startup_is_reported_with_its_log(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    with pytest.raises(LLMUnavailable, match="exited") as raised, LocalServer(broken):
        pass
    assert str(broken.parent / "broken.server.log") in str(raised.value)


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


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None and os.environ.get("CI") != "true",
    reason="needs llama-cpp-python (scripts/install.sh llm)",
)
@pytest.mark.timeout(600)
def test_the_server_dies_with_a_run_killed_by_sigkill_even_mid_answer():
    # A long answer is being generated when the run dies: a server that shut down gracefully
    # would finish it first, minutes for nobody.
    starter = (
        "import threading, time\n"
        "import openai\n"
        "from agent.llm.client import LocalServer, resolve_gguf\n"
        "server = LocalServer(resolve_gguf())\n"
        "endpoint = server.start()\n"
        "client = openai.OpenAI(base_url=endpoint.base_url, api_key='x', max_retries=0)\n"
        "ask = lambda: client.chat.completions.create(model=endpoint.model, max_tokens=1500,\n"
        "    messages=[{'role': 'user', 'content': 'Write a long story about a lighthouse.'}])\n"
        "threading.Thread(target=ask, daemon=True).start()\n"
        "time.sleep(3)\n"
        "print(server._process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    server_pid = int(run.stdout.readline())
    run.kill()  # SIGKILL: no atexit, no finally
    run.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "\nState:\tZ" not in state  # a zombie has exited; only reaping is left

    deadline = time.monotonic() + 30
    while alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(server_pid), "the LLM server outlived the run that started it"


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
