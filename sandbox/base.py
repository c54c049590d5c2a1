"""The contract every sandbox keeps: run one untrusted Python script, report what happened.

Paths are passed to the script unchanged, so a sandbox makes each input visible at the same
path it has on the host (read-only) and the output directory at its own path (writable).
That keeps a script's command line identical whichever sandbox runs it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

TAIL_CHARS = 4000


class SandboxError(RuntimeError):
    """A script could not run, or was stopped for a reason the caller must hear about."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 1800.0
    memory_mb: int = 4096
    cpus: float = 2.0
    pids: int = 512
    tmp_mb: int = 1024
    network: bool = False  # only the deploy step may ask for it, and only when the user allows it
    threads: int = 0  # torch / BLAS threads inside the script; 0 = leave the library default


@dataclass
class Result:
    exit_code: int
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    timed_out: bool = False
    oom_killed: bool = False
    sandbox: str = ""
    # Resource use, where the sandbox can measure it cheaply (DockerSandbox reads the
    # container's cgroup); None when unknown.
    peak_memory_mb: float | None = None
    cpu_s: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed

    def reason(self) -> str:
        if self.timed_out:
            return f"timed out after {self.duration_s:.0f}s"
        if self.oom_killed:
            return "killed for exceeding its memory limit"
        last = self.stderr_tail.strip().splitlines()[-1:] or ["(no stderr)"]
        return f"exit code {self.exit_code}: {last[0]}"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


@runtime_checkable
class Sandbox(Protocol):
    name: str

    def run(
        self,
        script: Path,
        args: list[str],
        *,
        inputs: list[Path],
        output_dir: Path,
        limits: Limits,
    ) -> Result:
        """Run `python script *args`; `inputs` are readable, only `output_dir` is writable."""
        ...
