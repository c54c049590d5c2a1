"""The LLM client: completes chats through a chat model, once per distinct prompt, and
accounts for every call.

Its parts: an `AnswerCache` (the run's llm_cache.sqlite), so a resumed run never pays for an
answer twice, and a `Ledger` (the run's ledger.jsonl), one line per call with its tokens, cost
and latency. Which endpoint to call is agent.llm.endpoint's; what a call costs,
agent.llm.pricing's.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from agent.llm.batch import BATCH_PRICE_SHARE, Polling, Request, request_body, run_batch
from agent.llm.endpoint import (
    ENV_BASE_URL,
    Endpoint,
    LLMUnavailable,
    PromptTooLong,
    first_line,
    is_context_exceeded,
    make_chat_model,
)
from agent.llm.pricing import (
    DEFAULT_EXPECTED_ANSWER_TOKENS,
    DEFAULT_PRICES,
    Budget,
    BudgetExhausted,
    Price,
    approx_tokens,
    price_table,
)
from agent.store.runstore import RunStore


@dataclass
class Usage:
    """Running totals; `calls` counts requests that reached the endpoint (paper: # LLM Calls)."""

    calls: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


# One generated token and the endpoint's most likely tokens at its place: {token: log-prob}.
TokenLogprobs = tuple[str, dict[str, float]]


@dataclass(frozen=True)
class Completion:
    """An answer and, where the endpoint returned them, each generated token's top log-probs."""

    text: str
    logprobs: tuple[TokenLogprobs, ...] | None = None  # None: the endpoint returned none


def cache_key(
    model: str,
    messages: Sequence[BaseMessage],
    max_tokens: int | None,
    top_logprobs: int | None = None,
    temperature: float | None = None,
) -> str:
    payload: dict = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [[message.type, message.content] for message in messages],
    }
    # Each absent unless asked for, so the keys of plain answers stay as they were.
    if top_logprobs is not None:
        payload["top_logprobs"] = top_logprobs
    if temperature is not None:
        payload["temperature"] = temperature
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def _token_logprobs(metadata: Mapping) -> tuple[TokenLogprobs, ...] | None:
    """The generated tokens' top log-probs from an OpenAI chat reply's `logprobs.content`, or
    None when the endpoint sent none or something else (it is an untrusted answer)."""
    content = (metadata.get("logprobs") or {}).get("content")
    if not isinstance(content, list) or not content:
        return None
    tokens = []
    for entry in content:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return None
        top = {
            alternative["token"]: float(alternative["logprob"])
            for alternative in entry.get("top_logprobs") or []
            if isinstance(alternative, dict)
            and isinstance(alternative.get("token"), str)
            and isinstance(alternative.get("logprob"), int | float)
        }
        tokens.append((entry["token"], top))
    return tuple(tokens)


def _to_cache(completion: Completion, top_logprobs: int | None) -> str:
    if top_logprobs is None:
        return completion.text  # plain answers are cached as the text, as they always were
    logprobs = None if completion.logprobs is None else [list(t) for t in completion.logprobs]
    return json.dumps({"text": completion.text, "logprobs": logprobs}, ensure_ascii=False)


def _from_cache(cached: str, top_logprobs: int | None) -> Completion:
    if top_logprobs is None:
        return Completion(cached)
    found = json.loads(cached)
    logprobs = found["logprobs"]
    return Completion(
        found["text"],
        None if logprobs is None else tuple((token, top) for token, top in logprobs),
    )


class AnswerCache:
    """Answers by prompt key, in a plain sqlite3 table.

    Not langchain_community's SQLiteCache: that one pulls SQLAlchemy and a dozen more packages,
    and it cannot tell us whether a call was a hit, which the ledger has to record. Every answer
    is committed when it is put, so a run killed right after a call resumes without paying for
    it again.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Reviewers may call from worker threads.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, answer TEXT)"
        )
        self._db.commit()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, model: str, answer: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (key, model, answer)
            )
            self._db.commit()

    def close(self) -> None:
        self._db.close()


class Ledger:
    """ledger.jsonl's writer: one JSON line per call (agent.store.ledger reads and sums them)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def append(self, entry: dict) -> None:
        with self.path.open("a", encoding="utf-8") as ledger:
            ledger.write(json.dumps(entry) + "\n")


class LLMClient:
    """Completes chats through a chat model, once per distinct prompt, and accounts for each call:
    its parts are the answer cache (asked first) and the ledger (told every call, hits too)."""

    def __init__(
        self,
        chat_model: BaseChatModel,
        model: str,
        cache_path: Path,
        ledger_path: Path,
        prices: Mapping[str, Price] | None = None,
        budget: Budget | None = None,
        stream_logprobs: bool = False,
    ) -> None:
        self.chat_model = chat_model
        # llama-cpp-python's server, asked for log-probs in one piece, log-softmaxes the logits
        # of every prompt token (8 s a call at 320 tokens, 2.7 s without); streamed, only those
        # of the answer's tokens (1.7 s). Streamed replies carry no token counts there.
        self.stream_logprobs = stream_logprobs
        self.model = model
        self.prices = DEFAULT_PRICES if prices is None else prices
        self.budget = budget
        self.usage = Usage()
        # Reviewers may call from worker threads; one lock keeps ledger, totals and budget in step.
        self._lock = threading.Lock()
        self._prompt_locks: dict[str, threading.Lock] = {}
        self.cache = AnswerCache(cache_path)
        self.ledger = Ledger(ledger_path)

    @classmethod
    def for_endpoint(
        cls,
        endpoint: Endpoint,
        run_dir: Path,
        price: Price | None = None,
        budget: Budget | None = None,
    ) -> LLMClient:
        """The client a run uses: cache and ledger in its run directory, priced by `price`,
        else free on the local server, else from DEFAULT_PRICES by model name."""
        store = RunStore(run_dir)
        return cls(
            make_chat_model(endpoint),
            model=endpoint.model,
            cache_path=store.llm_cache_path,
            ledger_path=store.ledger_path,
            prices={endpoint.model: price} if price is not None else price_table(endpoint),
            budget=budget,
            stream_logprobs=endpoint.local,
        )

    @property
    def price(self) -> Price | None:
        return self.prices.get(self.model)

    def complete(
        self,
        messages: Sequence[BaseMessage],
        purpose: str,
        max_tokens: int | None = None,
        cache: AnswerCache | None = None,
        temperature: float | None = None,
    ) -> str:
        """The answer to `messages`, from `cache` (default: the run's) when it holds one;
        `temperature` replaces the endpoint's own for this request (a cached answer is kept
        per temperature)."""
        return self.complete_scored(
            messages, purpose, max_tokens, cache=cache, temperature=temperature
        ).text

    def complete_scored(
        self,
        messages: Sequence[BaseMessage],
        purpose: str,
        max_tokens: int | None = None,
        top_logprobs: int | None = None,
        cache: AnswerCache | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """The answer, with each generated token's `top_logprobs` most likely tokens when that is
        asked for and the endpoint returns them (cached together, under their own key), from
        `cache` (default: the run's) when it holds one."""
        cache = cache or self.cache
        key = cache_key(self.model, messages, max_tokens, top_logprobs, temperature)
        # One request per distinct prompt even when reviewer threads ask for it at once: the
        # second waits for the first's answer and takes it from the cache.
        with self._lock:
            prompt_lock = self._prompt_locks.setdefault(key, threading.Lock())
        with prompt_lock:
            cached = cache.get(key)
            if cached is not None:
                self._record(purpose, key, tokens=(0, 0), latency_s=0.0, cache_hit=True)
                return _from_cache(cached, top_logprobs)
            budget, reserved = self.budget, None
            if budget is not None and budget.covers(purpose):
                reserved = self._reserve(budget, messages, max_tokens, price_share=1.0)
                if reserved is None:
                    raise BudgetExhausted(
                        f"LLM budget spent: {budget.calls} calls, ${budget.cost_usd:.4f}"
                    )
            try:
                completion, tokens, latency_s = self._call(
                    messages, max_tokens, top_logprobs, temperature
                )
            except BaseException:
                self._release([reserved])
                raise
            cache.put(key, self.model, _to_cache(completion, top_logprobs))
            self._record(
                purpose, key, tokens=tokens, latency_s=latency_s, cache_hit=False, reserved=reserved
            )
            return completion

    def prefetch(self, requests: Sequence[Request], jobs_dir: Path, polling: Polling) -> int:
        """Answer those of `requests` the cache does not hold through the endpoint's Batch API
        (agent.llm.batch), into the cache, each counted as a call at the batch price; returns
        how many were sent. Within the budget only: the rest are left for ordinary calls,
        which the budget then refuses as it would have."""
        pending: dict[str, Request] = {}
        for request in requests:
            key = cache_key(self.model, request.messages, request.max_tokens, request.top_logprobs)
            if key not in pending and self.cache.get(key) is None:
                pending[key] = request
        reserved: dict[str, float | None] = {}
        for key, request in pending.items():
            if self.budget is None or not self.budget.covers(request.purpose):
                reserved[key] = None
                continue
            expected = self._reserve(
                self.budget, request.messages, request.max_tokens, BATCH_PRICE_SHARE
            )
            if expected is None:
                break
            reserved[key] = expected
        if not reserved:
            return 0
        bodies = {key: request_body(self.model, pending[key]) for key in reserved}
        job = hashlib.sha256("".join(reserved).encode()).hexdigest()[:16]
        started = time.perf_counter()
        try:
            openai_client = getattr(self.chat_model, "root_client", None)
            if not isinstance(openai_client, openai.OpenAI):
                raise LLMUnavailable(
                    f"{self.model} is not served by an OpenAI client: no Batch API"
                )
            answered = run_batch(openai_client, bodies, jobs_dir / f"{job}.json", polling)
        except BaseException:
            self._release(reserved.values())
            raise
        latency_s = (time.perf_counter() - started) / max(1, len(answered))
        for key, expected in reserved.items():
            body = answered.get(key)
            request = pending[key]
            if body is None:  # asked again as an ordinary call
                self._release([expected])
                continue
            choice = body["choices"][0]
            logprobs = None if request.top_logprobs is None else _token_logprobs(choice)
            completion = Completion(choice["message"].get("content") or "", logprobs)
            self.cache.put(key, self.model, _to_cache(completion, request.top_logprobs))
            usage = body.get("usage") or {}
            tokens = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            self._record(
                request.purpose, key, tokens, latency_s, cache_hit=False, reserved=expected,
                price_share=BATCH_PRICE_SHARE, batch=job,
            )  # fmt: skip
        return len(reserved)

    def _reserve(
        self,
        budget: Budget,
        messages: Sequence[BaseMessage],
        max_tokens: int | None,
        price_share: float,
    ) -> float | None:
        """Count a call about to be sent against `budget` at its estimated cost (returned), or
        None where the caps leave no room for it."""
        prompt = approx_tokens("".join(str(m.content) for m in messages))
        answer = max_tokens or DEFAULT_EXPECTED_ANSWER_TOKENS
        expected = (self._cost(prompt, answer) or 0.0) * price_share
        with self._lock:
            return expected if budget.reserve(expected) else None

    def _release(self, reservations) -> None:
        with self._lock:
            for expected in reservations:
                if expected is not None and self.budget is not None:
                    self.budget.release(expected)

    def _call(
        self,
        messages: Sequence[BaseMessage],
        max_tokens: int | None,
        top_logprobs: int | None,
        temperature: float | None,
    ) -> tuple[Completion, tuple[int, int], float]:
        """(answer, (tokens in, tokens out), seconds) of one request to the endpoint."""
        options: dict = {} if max_tokens is None else {"max_tokens": max_tokens}
        if temperature is not None:
            options["temperature"] = temperature
        if top_logprobs is not None:
            options.update(logprobs=True, top_logprobs=top_logprobs)
            if self.stream_logprobs:
                options["stream"] = True
        started = time.perf_counter()
        url = getattr(self.chat_model, "openai_api_base", None) or "the LLM endpoint"
        try:
            reply = self.chat_model.invoke(list(messages), **options)
        except openai.APIConnectionError as err:
            raise LLMUnavailable(
                f"lost the LLM endpoint {url} ({first_line(err)}); is it still up?"
            ) from err
        except openai.APIError as err:  # an error status after the client's retries
            if is_context_exceeded(err):
                raise PromptTooLong(
                    f"the LLM endpoint {url} refused a prompt as too long ({first_line(err)})"
                ) from err
            raise LLMUnavailable(
                f"the LLM endpoint {url} answered with an error ({first_line(err)}); "
                f"check that server, or point --llm-base-url / {ENV_BASE_URL} at a working one"
            ) from err
        # langchain_openai raises these bare for a reply that is not a chat completion: a body
        # that is not JSON (ValueError), `choices` null (TypeError) or empty (IndexError).
        except (ValueError, TypeError, IndexError) as err:
            raise LLMUnavailable(
                f"the LLM endpoint {url} answered something that is not a chat completion "
                f"({first_line(err)}); check that server, or point --llm-base-url / "
                f"{ENV_BASE_URL} at a working one"
            ) from err
        usage = reply.usage_metadata or {}
        tokens = (usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        logprobs = None if top_logprobs is None else _token_logprobs(reply.response_metadata)
        return Completion(reply.text, logprobs), tokens, time.perf_counter() - started

    def _cost(self, tokens_in: int, tokens_out: int) -> float | None:
        price = self.prices.get(self.model)
        return None if price is None else price.cost(tokens_in, tokens_out)

    def _record(
        self,
        purpose: str,
        key: str,
        tokens: tuple[int, int],
        latency_s: float,
        cache_hit: bool,
        reserved: float | None = None,
        price_share: float = 1.0,
        batch: str | None = None,
    ) -> None:
        tokens_in, tokens_out = tokens
        cost = 0.0 if cache_hit else self._cost(tokens_in, tokens_out)
        if cost is not None:
            cost *= price_share
        line = {
            "ts": time.time(),
            "purpose": purpose,
            "model": self.model,
            "key": key[:16],
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost_usd": cost,  # null: no price known for this model
            "latency_s": round(latency_s, 4),
            "cache_hit": cache_hit,
        }
        if batch is not None:
            line["batch"] = batch  # the Batch API job that answered it
        with self._lock:
            if cache_hit:
                self.usage.cache_hits += 1
            else:
                self.usage.calls += 1
                self.usage.tokens_in += tokens_in
                self.usage.tokens_out += tokens_out
                self.usage.cost_usd += cost or 0.0
                if self.budget is not None and reserved is not None:
                    self.budget.release(reserved)
                    self.budget.spend(cost or 0.0)
            self.ledger.append(line)

    def close(self) -> None:
        self.cache.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
