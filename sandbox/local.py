"""LocalSandbox: a subprocess in its own namespaces, with rlimits and a scrubbed environment.

For hosts without a Docker engine, with util-linux (`unshare`, `setpriv`) and coreutils
(`timeout`), no root tools beyond those. It keeps DockerSandbox's contract and as much of its
isolation as the platform allows:

- no network: a new network namespace (loopback only, and down);
- a new PID namespace whose init is `timeout -s KILL`: the deadline holds even when the
  runner is `kill -9`ed, and when the script exits (or the runner dies: PDEATHSIG and
  `unshare --kill-child`) the kernel kills everything it spawned, daemons included;
- run by root, the script runs as the dedicated SANDBOX_UID with no capabilities and
  no-new-privs; run by a user, as that user, in a user namespace;
- rlimits: data segment (memory_mb), processes (pids), file size (output_mb), CPU seconds
  (timeout times cpus), open files;
- stdout/stderr read with a byte cap.

It still sees the host's filesystem (readable where the sandbox user may read), devices
and CPU count: a script asking for the network is refused; use `--sandbox docker` for that.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox.base import (
    Limits,
    Result,
    SandboxBase,
    SandboxError,
    read_tail,
    tail,
    timed_out,
)

# Variables a script legitimately needs; everything else (API keys, tokens) stays out.
ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "TZ", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
NOFILE = 4096
# The runner's own wait outlasts the in-namespace deadline by this much; it only acts when
# `timeout` itself failed.
BACKSTOP_S = 10.0
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
_libc = ctypes.CDLL(None, use_errno=True)


def script_environment(limits: Limits, home: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
    env.update(
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        HF_HUB_OFFLINE="1" if not limits.network else os.environ.get("HF_HUB_OFFLINE", "0"),
        TOKENIZERS_PARALLELISM="false",
    )
    if limits.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(limits.threads)
    return env


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _child_setup(limits: Limits):
    """Runs in the forked child before exec; everything it sets is inherited by the script."""
    caps = {
        resource.RLIMIT_DATA: limits.memory_mb << 20,
        resource.RLIMIT_NPROC: limits.pids,
        resource.RLIMIT_FSIZE: limits.output_mb << 20,
        resource.RLIMIT_CPU: math.ceil(limits.timeout_s * max(limits.cpus, 1.0)),
        resource.RLIMIT_NOFILE: NOFILE,
    }

    def setup() -> None:
        # The runner's death takes the namespace down with it (unshare --kill-child).
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for limit, value in caps.items():
            hard = resource.getrlimit(limit)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(limit, (value, value))

    return setup


def _let_sandbox_user_reach(paths: list[Path]) -> None:
    """Add the search bit (never read) for others on every directory above `paths`.

    The sandbox user must reach the interpreter, the script, the inputs and the output
    directory, and they may sit below a 0700 directory such as /root.
    """
    for path in paths:
        for parent in Path(path).resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


class LocalSandbox(SandboxBase):
    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable
        self._tools = {tool: shutil.which(tool) for tool in ("unshare", "setpriv", "timeout")}
        missing = [tool for tool, path in self._tools.items() if path is None]
        if missing:
            raise SandboxError(
                f"LocalSandbox needs {', '.join(missing)} (util-linux, coreutils); "
                "install them or use --sandbox docker"
            )
        # A script running as this same user (non-root runner) must not read the runner's
        # environment (API keys) through /proc/<pid>/environ, nor ptrace it.
        _prctl(PR_SET_DUMPABLE, 0)
        self._namespaces = self._namespace_command()

    def _namespace_command(self) -> list[str]:
        unshare = [self._tools["unshare"], "--net", "--pid", "--fork", "--kill-child"]
        unshare.append("--mount-proc")  # /proc shows the namespace's processes only
        if os.geteuid() == 0:
            return unshare
        unshare[1:1] = ["--user", "--map-current-user"]
        probe = subprocess.run([*unshare, "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            reason = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise SandboxError(
                f"LocalSandbox cannot isolate scripts here ({reason}); use --sandbox docker"
            )
        return unshare

    def run(
        self,
        script: Path,
        args: list[str],
        *,
        inputs: list[Path],
        output_dir: Path,
        limits: Limits,
    ) -> Result:
        if limits.network:
            raise SandboxError(
                "LocalSandbox gives scripts no network (the host downloads models itself); "
                "use --sandbox docker for a script that needs it"
            )
        return super().run(script, args, inputs=inputs, output_dir=output_dir, limits=limits)

    def _execute(
        self,
        script: Path,
        args: list[str],
        inputs: list[Path],
        output_dir: Path,
        limits: Limits,
        uid: int,
        gid: int,
    ) -> Result:
        if uid != os.geteuid():
            prefixes = [Path(p) for p in (self.python, sys.prefix, sys.base_prefix)]
            _let_sandbox_user_reach([script, *inputs, output_dir, *prefixes])
        # `timeout` is the namespace's init: the script cannot signal it, it enforces the
        # deadline even without the runner, and its exit takes down every process inside.
        command = [*self._namespaces, self._tools["timeout"], "-s", "KILL", str(limits.timeout_s)]
        if uid != os.geteuid():
            command += [
                self._tools["setpriv"],
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        start = time.monotonic()
        proc = subprocess.Popen(
            [*command, self.python, str(script), *args],
            cwd=output_dir,
            env=script_environment(limits, home=output_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_child_setup(limits),
        )
        with ThreadPoolExecutor(2) as pool:
            out = pool.submit(read_tail, proc.stdout)
            err = pool.submit(read_tail, proc.stderr)
            try:
                proc.wait(timeout=limits.timeout_s + BACKSTOP_S)
            except subprocess.TimeoutExpired:
                # --kill-child: unshare's death kills the namespace's init, so everything.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            stdout, stderr = out.result(), err.result()
        duration = time.monotonic() - start
        # Report a signal death as a shell (and Docker) would, 128 + signal: 137 for SIGKILL.
        exit_code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        return Result(
            exit_code=exit_code,
            stdout_tail=tail(stdout.decode("utf-8", "replace")),
            stderr_tail=tail(stderr.decode("utf-8", "replace")),
            duration_s=duration,
            timed_out=timed_out(exit_code, duration, limits),
            sandbox=self.name,
        )
