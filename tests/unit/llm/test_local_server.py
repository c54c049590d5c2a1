import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.llm.endpoint import LLMUnavailable
from agent.llm.local_server import ENV_GGUF, LocalServer, join_parts, resolve_gguf


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
        "from agent.llm.local_server import LocalServer, resolve_gguf\n"
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
