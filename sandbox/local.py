"""LocalSandbox: a subprocess with a timeout and a scrubbed environment.

For hosts without a Docker engine. It keeps the same contract as DockerSandbox, but it
isolates far less: the script runs as this user and could read what this user can read.
Network, memory and read-only limits are enforced only by DockerSandbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sandbox.base import Limits, Result, SandboxError, tail

# Variables a script legitimately needs; everything else (API keys, tokens) stays out.
ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "TZ", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


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


class LocalSandbox:
    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def run(
        self,
        script: Path,
        args: list[str],
        *,
        inputs: list[Path],
        output_dir: Path,
        limits: Limits,
    ) -> Result:
        script = Path(script)
        if not script.is_file():
            raise SandboxError(f"script not found: {script}")
        missing = [str(p) for p in inputs if not Path(p).exists()]
        if missing:
            raise SandboxError(f"sandbox inputs not found: {', '.join(missing)}")
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        # A new session lets a timeout kill the script and every child it started.
        proc = subprocess.Popen(
            [self.python, str(script), *args],
            cwd=output_dir,
            env=script_environment(limits, home=output_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        timed_out = False
        try:
            out, err = proc.communicate(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        # Report a signal death as a shell (and Docker) would, 128 + signal: 137 for SIGKILL.
        exit_code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        return Result(
            exit_code=exit_code,
            stdout_tail=tail(out.decode("utf-8", "replace")),
            stderr_tail=tail(err.decode("utf-8", "replace")),
            duration_s=time.monotonic() - start,
            timed_out=timed_out,
            sandbox=self.name,
        )
