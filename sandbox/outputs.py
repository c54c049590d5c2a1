"""What a script left behind is hostile until checked: walk it without following anything.

A script's output directory can hold a symlink to a host file (so a host read or write goes
there), a hard link to one (same), a FIFO (a read hangs), a device (`/dev/zero`: a read never
ends) or a file far bigger than the step can produce. `inspect_outputs` refuses all of them
using `lstat` data only, before the host opens anything; `read_bytes_bounded` then reads one file
without following a link or blocking, and never more than a limit.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class UnsafeOutput(Exception):
    """An output directory holds something the host must not read; `reason` says what."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def inspect_outputs(
    directory: Path, *, max_file_bytes: int, max_total_bytes: int, max_files: int
) -> list[Path]:
    """The regular files under `directory`; raise UnsafeOutput on anything else or too much."""
    root = Path(directory)
    try:
        mode = os.lstat(root).st_mode
    except FileNotFoundError:
        raise UnsafeOutput(f"the output directory {root.name} is gone") from None
    if not stat.S_ISDIR(mode):
        raise UnsafeOutput(f"the output directory {root.name} is {_kind(mode)}")
    files: list[Path] = []
    total = 0
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                where = os.path.relpath(entry.path, root)
                if stat.S_ISDIR(info.st_mode):
                    pending.append(Path(entry.path))
                    continue
                if not stat.S_ISREG(info.st_mode):
                    raise UnsafeOutput(f"{where} is {_kind(info.st_mode)}")
                # A second name for the inode may be a host file the script linked in.
                if info.st_nlink > 1:
                    raise UnsafeOutput(f"{where} is a hard link ({info.st_nlink} names)")
                if info.st_size > max_file_bytes:
                    raise UnsafeOutput(f"{where} is {info.st_size} bytes (limit {max_file_bytes})")
                total += info.st_size
                files.append(Path(entry.path))
                if len(files) > max_files:
                    raise UnsafeOutput(f"more than {max_files} files")
                if total > max_total_bytes:
                    raise UnsafeOutput(f"more than {max_total_bytes} bytes in all")
    return files


def read_bytes_bounded(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of the regular file `path`; UnsafeOutput if it is more or other."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafeOutput(f"{Path(path).name} is a symlink") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeOutput(f"{Path(path).name} is {_kind(info.st_mode)}")
        if info.st_nlink > 1:
            raise UnsafeOutput(f"{Path(path).name} is a hard link ({info.st_nlink} names)")
        chunks, size = [], 0
        # Read one byte past the limit: a file still growing is caught too.
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnsafeOutput(f"{Path(path).name} is over {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
