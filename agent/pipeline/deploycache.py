"""Deployed models (v0) shared between runs on one machine: deploy once per model, not per run.

A v0 depends only on the model's files and the deploy script that saved them, so a checked
deploy's output is kept in `<cache>/<key>/`, the key hashing the model id, its local source's
file listing (names, sizes, modification times: a changed model is another key) and the
script. A later run copies the model from there instead of running the step; it never links
to it, so nothing a run's scripts do to their model reaches the cache. The cache holds only
what the host checked (inspect_step) and is written whole or not at all (a temp directory
renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

from agent.domain import CommitteeMember


def machine_deploy_cache() -> Path:
    """The per-user cache the CLI's runs share."""
    return Path(platformdirs.user_cache_dir("autoannotator")) / "deployed"


def _listing(source: Path) -> list[tuple[str, int, int]]:
    files = (p for p in sorted(source.rglob("*")) if p.is_file())
    return [(str(p.relative_to(source)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def deploy_key(model: CommitteeMember, source: Path, script: Path) -> str:
    identity = {
        "model": model.id,
        "source": _listing(source),
        "script": hashlib.sha256(script.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def fetch_deployed(cache: Path, key: str, target: Path) -> bool:
    """Copy the cached deploy `key` to `target` (absent before); False when none is cached."""
    cached = cache / key
    if not (cached / "config.json").is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        shutil.copytree(cached, partial, dirs_exist_ok=True, symlinks=True)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return True


def keep_deployed(cache: Path, key: str, deployed: Path) -> None:
    """Add a checked deploy's model directory to the cache (a concurrent run may win)."""
    cache.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=cache, prefix=f".{key}."))
    try:
        shutil.copytree(deployed, partial, dirs_exist_ok=True, symlinks=True)
        os.replace(partial, cache / key)
    except OSError:
        pass  # another run put the key in place first, or the disk is full: only a shortcut
    finally:
        shutil.rmtree(partial, ignore_errors=True)
