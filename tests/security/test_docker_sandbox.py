"""What a hostile script tries inside DockerSandbox, and how each attempt is stopped.

Every attack must end as a failing Result (or SandboxError) whose reason names the cause.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from sandbox.base import Limits
from sandbox.docker import NETWORK

pytestmark = pytest.mark.docker

LIMITS = Limits(timeout_s=60, memory_mb=512, tmp_mb=64, pids=128)


def run(sandbox, script, tmp_path, limits=LIMITS, inputs=(), args=()):
    return sandbox.run(
        script, list(args), inputs=list(inputs), output_dir=tmp_path / "out", limits=limits
    )


def host_address() -> str:
    """This machine's own non-loopback address (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def test_the_container_is_unprivileged(docker_sandbox, make_script, tmp_path):
    script = make_script(
        """
        import os
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(os.getuid(), int(status["CapEff"], 16), status["NoNewPrivs"].strip())
        print(sorted(os.listdir("/sys/class/net")))
        """
    )

    result = run(docker_sandbox, script, tmp_path)

    assert result.ok, result.reason()
    uid, capabilities, no_new_privs = result.stdout_tail.splitlines()[0].split()
    assert int(uid) != 0
    assert (capabilities, no_new_privs) == ("0", "1")
    assert result.stdout_tail.splitlines()[1] == "['lo']"


def test_network_access_is_blocked(docker_sandbox, make_script, tmp_path):
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        address = (host_address(), listener.getsockname()[1])
        script = make_script(
            f"import socket\nsocket.create_connection({address!r}, timeout=5).close()\nprint('in')"
        )
        # The same probe from the host gets through, so the probe itself is sound.
        control = subprocess.run([sys.executable, script], capture_output=True, text=True)
        result = run(docker_sandbox, script, tmp_path)

    assert control.returncode == 0, control.stderr
    assert not result.ok
    assert "Network is unreachable" in result.reason()


def test_network_is_an_explicit_opt_in_on_a_network_of_its_own(
    docker_sandbox, make_script, tmp_path
):
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        address = (host_address(), listener.getsockname()[1])
        script = make_script(
            f"import os, socket\nsocket.create_connection({address!r}, timeout=5)\n"
            "print(sorted(os.listdir('/sys/class/net')))"
        )

        result = run(docker_sandbox, script, tmp_path, limits=Limits(network=True))

    assert result.ok, result.reason()
    # A veth of its own on the sandbox's network, not the host's interfaces.
    assert result.stdout_tail == "['eth0', 'lo']\n"
    assert docker_sandbox.client.networks.get(NETWORK).attrs["Driver"] == "bridge"


def test_inputs_are_read_only(docker_sandbox, make_script, tmp_path):
    data = tmp_path / "in" / "data.txt"
    data.parent.mkdir()
    data.write_text("original\n")
    data.chmod(0o666)  # so file permissions allow the write and only the mount can refuse it
    script = make_script("import sys\nopen(sys.argv[1], 'a').write('tampered\\n')")

    result = run(docker_sandbox, script, tmp_path, inputs=[data.parent], args=[str(data)])

    assert not result.ok
    assert "Read-only file system" in result.reason()
    assert data.read_text() == "original\n"


def test_fork_bomb_hits_the_pids_limit(docker_sandbox, make_script, tmp_path):
    script = make_script(
        """
        import os, time
        while True:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        """
    )

    result = run(docker_sandbox, script, tmp_path, limits=Limits(timeout_s=60, pids=32))

    assert not result.ok
    assert "BlockingIOError" in result.reason()
    assert "Resource temporarily unavailable" in result.reason()
    assert result.duration_s < 30  # the children die with the container, not after 60 s


def test_memory_hog_is_oom_killed(docker_sandbox, make_script, tmp_path):
    script = make_script(
        """
        chunks = []
        while True:
            chunks.append(bytearray(b"x" * (16 << 20)))  # pages really touched
        """
    )

    result = run(docker_sandbox, script, tmp_path, limits=Limits(timeout_s=60, memory_mb=128))

    assert result.oom_killed
    assert not result.ok
    assert result.reason() == "killed for exceeding its memory limit"


def test_infinite_loop_is_killed_and_removed(docker_sandbox, docker_client, make_script, tmp_path):
    script = make_script("while True:\n    pass")

    result = run(docker_sandbox, script, tmp_path, limits=Limits(timeout_s=2))

    assert result.timed_out
    assert result.reason().startswith("timed out after")
    leftovers = [
        c for c in docker_client.containers.list(all=True) if str(script) in c.attrs["Args"]
    ]
    assert leftovers == []


@pytest.mark.parametrize(
    ("target", "cause"),
    [("/tmp/filler", "No space left on device"), ("/filler", "Read-only file system")],
)
def test_filling_the_disk_is_capped(docker_sandbox, make_script, tmp_path, target, cause):
    script = make_script(
        f"""
        with open({target!r}, "wb") as sink:
            while True:
                sink.write(b"x" * (1 << 20))
                sink.flush()
        """
    )

    result = run(docker_sandbox, script, tmp_path, limits=Limits(timeout_s=60, tmp_mb=16))

    assert not result.ok
    assert not result.timed_out
    assert cause in result.reason()


@pytest.mark.parametrize(
    ("attempt", "cause"),
    [
        ("import os; os.setuid(0)", "PermissionError: [Errno 1] Operation not permitted"),
        ("import os; os.chmod('/tmp', 0o700)", "Operation not permitted"),  # root owns /tmp
        ("import os; os.chmod('/usr/bin/su', 0o4777)", "Read-only file system"),
        (
            "import subprocess, sys\n"
            "done = subprocess.run(['/usr/bin/su', 'root', '-c', 'id -u'], capture_output=True,"
            " text=True, stdin=subprocess.DEVNULL)\n"
            "sys.exit(f'su exit {done.returncode}: {done.stdout.strip()} {done.stderr.strip()}')",
            "su exit 1",
        ),
    ],
)
def test_privilege_escalation_fails(docker_sandbox, make_script, tmp_path, attempt, cause):
    result = run(docker_sandbox, make_script(attempt), tmp_path)

    assert not result.ok
    assert cause in result.reason()
