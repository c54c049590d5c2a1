"""Scripts the LLM wrote that passed their probe, kept per user: written once per model kind.

A script that passed verification in one run is the best first answer for the next model of
the same kind, on any run of this user: `keep_script` files it under
`<cache>/contract-<version>/<role>/<kind>/<sha256>.py` with where it came from, and
`cached_scripts` lists them newest first. A cached script is no more trusted than the LLM that
wrote it: the run that reuses it checks and probes it on its own rows like a fresh answer
(agent.scripts.codegen), so the cache saves the LLM's time and nothing else. A changed
contract is another directory, so no script written to an older one is offered.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

from agent.scripts.contract import CONTRACT_VERSION

# A contract script is 60-120 lines; anything far larger is not one the host filed.
MAX_SCRIPT_BYTES = 256 << 10


@dataclass(frozen=True)
class CachedScript:
    code: str
    run: str  # the run whose probe it passed
    model: str  # the model it was written for
    written: str  # when (ISO 8601, UTC)


def machine_script_cache() -> Path:
    """The per-user cache the CLI's runs share."""
    return Path(platformdirs.user_cache_dir("autoannotator")) / "scripts"


def _kind_dir(cache: Path, role: str, kind: str) -> Path:
    return cache / f"contract-{CONTRACT_VERSION}" / role / kind


def cached_scripts(cache: Path, role: str, kind: str) -> list[CachedScript]:
    """The scripts kept for (role, kind) under the current contract, newest first; a file
    that is not one `keep_script` wrote whole (no record, too large, not UTF-8) is skipped."""
    found = []
    for script in _kind_dir(cache, role, kind).glob("*.py"):
        try:
            if script.stat().st_size > MAX_SCRIPT_BYTES:
                continue
            record = json.loads(script.with_suffix(".json").read_text(encoding="utf-8"))
            found.append(CachedScript(code=script.read_text(encoding="utf-8"), **record))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
            continue
    return sorted(found, key=lambda cached: cached.written, reverse=True)


def _write_atomic(text: str, target: Path) -> None:
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)


def keep_script(cache: Path, role: str, kind: str, code: str, *, run: str, model: str) -> None:
    """File a script that passed its probe; the same code again only refreshes its record.
    The record goes in first, so a reader never finds a script without one."""
    folder = _kind_dir(cache, role, kind)
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(code.encode()).hexdigest()[:20]
    record = {"run": run, "model": model, "written": datetime.now(UTC).isoformat()}
    _write_atomic(json.dumps(record), folder / f"{name}.json")
    _write_atomic(code, folder / f"{name}.py")
