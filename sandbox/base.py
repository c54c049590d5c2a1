"""The contract every sandbox keeps: run one untrusted Python script, report what happened.

Paths are passed to the script unchanged, so a sandbox makes each input visible at the same
path it has on the host (read-only) and the output directory at its own path (writable).
That keeps a script's command line identical whichever sandbox runs it.
"""

from __future__ import annotations

import json
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

TAIL_CHARS = 4000
# What the runner keeps of each output stream while reading it: enough bytes for TAIL_CHARS
# characters of any UTF-8 text (4 bytes at most each), so a flood costs the runner only this.
STREAM_CAP_BYTES = 4 * TAIL_CHARS
# The uid/gid scripts run as when the runner is root, in both sandboxes. Not a real host
# user (uid 1000 usually is), so a script can never act as a person on the host.
SANDBOX_UID = 64000
SANDBOX_GID = 64000


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
    output_mb: int = 2048  # the largest file a script may write (RLIMIT_FSIZE); past it: EFBIG


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


def timed_out(exit_code: int, duration_s: float, limits: Limits) -> bool:
    """The sandbox's `timeout -s KILL` ended the script: it exits 124, or dies of the SIGKILL
    it sent its own process group (137), once the deadline has passed."""
    return exit_code in (124, 137) and duration_s >= limits.timeout_s


def read_tail(stream: BinaryIO, cap: int = STREAM_CAP_BYTES) -> bytes:
    """Read `stream` to its end, keeping only its last `cap` bytes."""
    kept = bytearray()
    while chunk := stream.read(1 << 16):
        kept += chunk
        if len(kept) > 2 * cap:  # trim in batches, not on every chunk
            del kept[:-cap]
    return bytes(kept[-cap:])


def walk(root: Path) -> Iterator[Path]:
    """`root` and everything under it, without following symbolic links."""
    yield root
    if root.is_dir() and not root.is_symlink():
        for parent, dirs, files in os.walk(root):
            for name in dirs + files:
                yield Path(parent, name)


class SandboxBase(ABC):
    """What every engine does around a run: check the paths, lend the step's output directory
    to the sandbox user, and take it back after; engines implement `_execute`.

    A non-root caller's own uid is already unprivileged and sees its files as usual.
    A root caller's uid must not be used, so the sandbox user gets the output directory
    and read access to the inputs (bits are only ever added, never removed).
    """

    name = ""

    def run(
        self,
        script: Path,
        args: list[str],
        *,
        inputs: list[Path],
        output_dir: Path,
        limits: Limits,
    ) -> Result:
        script = Path(script).absolute()
        if not script.is_file():
            raise SandboxError(f"script not found: {script}")
        inputs = [Path(p).absolute() for p in inputs]
        missing = [str(p) for p in inputs if not p.exists()]
        if missing:
            raise SandboxError(f"sandbox inputs not found: {', '.join(missing)}")
        output_dir = Path(output_dir).absolute()
        output_dir.mkdir(parents=True, exist_ok=True)
        owner = output_dir.stat()
        uid, gid = self._share_with_sandbox_user([script, *inputs], output_dir)
        try:
            return self._execute(script, args, inputs, output_dir, limits, uid, gid)
        finally:
            self._give_back_outputs(output_dir, owner.st_uid, owner.st_gid)

    @abstractmethod
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
        """Run `python script *args` as uid:gid with `limits`; paths are absolute and exist."""

    def _share_with_sandbox_user(self, readable: list[Path], output_dir: Path) -> tuple[int, int]:
        """The uid and gid the script runs as."""
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid()
        for path in readable:
            for item in walk(path):
                mode = item.lstat().st_mode
                if stat.S_ISLNK(mode):
                    continue
                wanted = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
                if mode & wanted != wanted:
                    item.chmod(stat.S_IMODE(mode) | wanted)
        for item in walk(output_dir):
            os.lchown(item, SANDBOX_UID, SANDBOX_GID)
        return SANDBOX_UID, SANDBOX_GID

    def _give_back_outputs(self, output_dir: Path, uid: int, gid: int) -> None:
        # What the script wrote belongs to the output directory's owner again.
        if os.geteuid() == 0:
            for item in walk(output_dir):
                os.lchown(item, uid, gid)


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
