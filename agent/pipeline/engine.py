"""Which engine runs a run's annotate steps (`--engine local|ray|auto`), and the record of it in
the run directory, so that a resume runs where the run ran unless told otherwise."""

from __future__ import annotations

import os

from agent.errors import UserError
from agent.pipeline.annotate import Engine, LocalEngine
from agent.pipeline.ray_engine import RayEngine
from agent.store.runstore import RunStore, read_json, write_json

ENGINES = ("local", "ray", "auto")


def make_engine(kind: str = "local", ray_address: str | None = None) -> Engine:
    """`local`: this process; `ray`: the Ray cluster at `ray_address` (else $RAY_ADDRESS, else a
    new local instance sized to this machine); `auto`: ray when an address is known, else local."""
    if kind not in ENGINES:
        raise UserError(f"--engine takes {', '.join(ENGINES[:-1])} or auto, not {kind!r}")
    if kind == "auto":
        kind = "ray" if ray_address or os.environ.get("RAY_ADDRESS") else "local"
    if kind == "local":
        return LocalEngine()
    return RayEngine(address=ray_address)


def record_engine(store: RunStore, engine: Engine) -> None:
    """Write down where the run's annotate steps run (engine.json), for resume and the report."""
    record = {"engine": engine.name, "address": getattr(engine, "address", None)}
    write_json(record, store.engine_path)


def recorded_engine(store: RunStore) -> tuple[str, str | None]:
    """(kind, Ray address) the run last ran on; `local` for a run that recorded none."""
    if not store.engine_path.is_file():
        return "local", None
    record = read_json(store.engine_path)
    return str(record.get("engine") or "local"), record.get("address")
