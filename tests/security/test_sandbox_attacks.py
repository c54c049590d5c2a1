"""Attacks a hostile script (written by a hostile LLM endpoint) makes on the sandbox running it.

Each test is one attack, run in both sandboxes where it means something, and asserts that the
attack failed. Every attack is bounded (a fork bomb stops at 100 children, a memory hog at
1 GiB) so that a sandbox that does not stop it still leaves the machine usable.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sandbox.base import Limits
from sandbox.docker import DockerSandbox

# The sandbox fixtures (docker_client, docker_sandbox, sandbox, make_script) come from
# tests.fixtures.sandbox, a plugin of the root conftest: the same engine checks (skip, or fail
# under CI=true) and the same sandboxes as the conformance suite.

LIMITS = Limits(timeout_s=20, memory_mb=256, pids=32, output_mb=16)
SECRET = "sk-fake-runner-secret-0123456789"
REPO = Path(__file__).resolve().parents[2]
KINDS = ["local", pytest.param("docker", marks=pytest.mark.docker)]

# Runs a sandbox in a process of its own, so that an attack on the runner cannot take the
# test down with it; prints the Result and how much the runner's peak memory grew.
RUNNER = """
import json, resource, sys
from sandbox.base import Limits
from sandbox.factory import make_sandbox
kind, script, out, limits, run_id = json.loads(sys.argv[1])
box = make_sandbox(kind, "cpu", **({"run_id": run_id} if run_id else {}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = box.run(script, [], inputs=[], output_dir=out, limits=Limits(**limits))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
report = {"stdout": result.stdout_tail, "reason": result.reason(), "grown_mb": grown / 1024}
print(json.dumps(report))
"""


def run(sandbox, script, tmp_path, limits=LIMITS):
    return sandbox.run(script, [], inputs=[], output_dir=tmp_path / "out", limits=limits)


def start_runner(kind, script, out, limits=LIMITS, run_id=None, env=None) -> subprocess.Popen:
    spec = [kind, str(script), str(out), limits.__dict__, run_id]
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, json.dumps(spec)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def kind(request):
    if request.param == "docker":
        request.getfixturevalue("docker_client")  # skips (or fails in CI) without an engine
    return request.param


@pytest.mark.parametrize("kind", KINDS, indirect=True)
def test_runner_environment_is_out_of_reach(kind, make_script, tmp_path):
    script = make_script(
        f"""
        import os
        for pid in [os.getppid()] + [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                if {SECRET!r}.encode() in open(f"/proc/{{pid}}/environ", "rb").read():
                    print("LEAKED from", pid)
            except OSError:
                pass
        """
    )
    # In the runner's environment from its start: /proc/<pid>/environ shows only that.
    env = {**os.environ, "OPENAI_API_KEY": SECRET}

    runner = start_runner(kind, script, tmp_path / "out", env=env)
    stdout, stderr = runner.communicate(timeout=60)

    assert runner.returncode == 0, stderr
    assert "LEAKED" not in json.loads(stdout)["stdout"]


def test_etc_shadow_is_unreadable(sandbox, make_script, tmp_path):
    script = make_script("print('READ', len(open('/etc/shadow').read()))")

    result = run(sandbox, script, tmp_path)

    assert not result.ok
    assert "READ" not in result.stdout_tail


def test_host_loopback_is_unreachable(sandbox, make_script, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        script = make_script(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "print('CONNECTED')"
        )

        result = run(sandbox, script, tmp_path)

    assert not result.ok
    assert "CONNECTED" not in result.stdout_tail


def test_the_venv_is_not_writable(sandbox, make_script, tmp_path):
    target = Path(sys.prefix, f"pwned-{uuid.uuid4().hex}")
    script = make_script(f"open({str(target)!r}, 'w').write('pwned')")

    try:
        result = run(sandbox, script, tmp_path)
        written = target.exists()
    finally:
        target.unlink(missing_ok=True)

    assert not written
    assert not result.ok


@pytest.mark.parametrize("kind", KINDS, indirect=True)
def test_the_script_cannot_kill_its_runner(kind, make_script, tmp_path):
    script = make_script("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")

    runner = start_runner(kind, script, tmp_path / "out")
    stdout, stderr = runner.communicate(timeout=60)

    assert runner.returncode == 0, stderr
    assert json.loads(stdout)["reason"]


def test_a_daemon_does_not_outlive_its_step(sandbox, make_script, tmp_path):
    late = tmp_path / "out" / "late.txt"
    script = make_script(
        f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1)
                open({str(late)!r}, "w").write("still here")
            os._exit(0)
        """
    )

    result = run(sandbox, script, tmp_path)
    time.sleep(3)

    assert result.ok, result.reason()
    assert not late.exists()


def test_a_fork_bomb_hits_the_process_limit(sandbox, make_script, tmp_path):
    script = make_script(
        """
        import os, time
        started = 0
        try:
            for _ in range(100):
                if os.fork() == 0:
                    time.sleep(5)
                    os._exit(0)
                started += 1
        finally:
            print("STARTED", started)
        """
    )

    result = run(sandbox, script, tmp_path)

    started = int(result.stdout_tail.split()[-1])
    assert started < LIMITS.pids
    assert "BlockingIOError" in result.reason()


def test_a_memory_hog_is_stopped(sandbox, make_script, tmp_path):
    script = make_script(
        """
        chunks = [bytearray(b"x" * (16 << 20)) for _ in range(64)]  # 1 GiB, really touched
        print("GOT", len(chunks) * 16, "MiB")
        """
    )

    result = run(sandbox, script, tmp_path)

    assert not result.ok
    assert "GOT" not in result.stdout_tail


@pytest.mark.parametrize(
    "call", ["os.posix_fallocate(fd, 0, 5 << 30)", "os.ftruncate(fd, 5 << 30)"]
)
def test_a_5_gib_file_is_refused(sandbox, make_script, tmp_path, call):
    filler = tmp_path / "out" / "filler"
    script = make_script(
        f"import os\nfd = os.open({str(filler)!r}, os.O_CREAT | os.O_WRONLY)\n{call}\nprint('BIG')"
    )

    result = run(sandbox, script, tmp_path)

    assert not result.ok
    assert "File too large" in result.reason()
    assert "BIG" not in result.stdout_tail
    assert filler.stat().st_size <= LIMITS.output_mb << 20


@pytest.mark.parametrize("kind", KINDS, indirect=True)
def test_a_stdout_flood_does_not_grow_the_runner(kind, make_script, tmp_path):
    script = make_script(
        """
        import sys
        block = b"y" * (1 << 20)
        for _ in range(200):
            sys.stdout.buffer.write(block)
        print("END")
        """
    )

    runner = start_runner(kind, script, tmp_path / "out")
    stdout, stderr = runner.communicate(timeout=120)

    assert runner.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["stdout"].endswith("yEND\n")
    assert report["grown_mb"] < 50


@pytest.mark.parametrize("kind", KINDS, indirect=True)
def test_killing_the_runner_leaves_no_script_behind(kind, make_script, tmp_path, request):
    beat = tmp_path / "out" / "beat"
    script = make_script(
        f"""
        import time
        n = 0
        while True:
            n += 1
            open({str(beat)!r}, "w").write(str(n))
            time.sleep(0.1)
        """
    )
    run_id = f"attack-{uuid.uuid4().hex[:8]}" if kind == "docker" else None
    limits = Limits(timeout_s=4)

    runner = start_runner(kind, script, tmp_path / "out", limits=limits, run_id=run_id)
    start = time.monotonic()
    while not beat.exists() and time.monotonic() - start < 30:
        time.sleep(0.1)
    assert beat.exists(), runner.communicate()[1]
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    time.sleep(max(0.0, start + limits.timeout_s + 2 - time.monotonic()))
    first = beat.read_text()
    time.sleep(1)

    assert beat.read_text() == first  # the script is dead by its deadline
    if kind == "docker":
        client = request.getfixturevalue("docker_client")
        DockerSandbox(client, device="cpu", run_id=run_id)  # what the agent does on resume
        label = {"label": f"autoannotator.run={run_id}"}
        assert client.containers.list(all=True, filters=label) == []
