"""Votes of deployed, never fine-tuned (v0) models, shared between runs over the same rows.

The runs of an ablation grid differ in k and β, not in what an untouched model says about a
text: a v0 vote depends only on the model, its annotate script, the tokenizer settings, the
device and the text. Such votes are kept in `<cache>/<key>.parquet` (id, text, label, score,
and probs where the script reports them),
the key hashing everything the vote depends on; a run finds a chunk's votes there only when
every row of the chunk is present with the same id and text. Fine-tuned versions (v1+) are
never cached: their weights depend on the run's own history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from agent.domain import CommitteeMember
from agent.scripts.contract import VOTE_COLUMNS
from agent.store.runstore import RunStore, write_parquet


def cache_key(store: RunStore, model: CommitteeMember, device: str) -> str:
    task = store.task()
    script = store.script_path("annotate", model.slug).read_bytes()
    identity = {
        "model": model.id,
        "source": model.source,
        "script": hashlib.sha256(script).hexdigest(),
        "max_length": task.max_length,
        "batch_size": task.batch_size,
        "device": device,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _cached(cache: Path, key: str) -> pd.DataFrame | None:
    path = cache / f"{key}.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def fill_from_cache(
    store: RunStore,
    cache: Path,
    committee: Sequence[CommitteeMember],
    versions: dict[str, int],
    chunk: int,
    device: str,
) -> list[str]:
    """Write votes/<slug>/<chunk>.parquet from the cache where it covers the chunk; returns the
    slugs so served."""
    rows = pd.read_parquet(store.input_chunk(chunk), columns=["id", "text"])
    served = []
    for model in committee:
        target = store.model_votes(model.slug, chunk)
        if versions[model.slug] != 0 or target.is_file():
            continue
        cached = _cached(cache, cache_key(store, model, device))
        if cached is None:
            continue
        hits = rows.merge(cached, on=["id", "text"], how="left")
        if hits["label"].isna().any():
            continue
        # The probabilities only when every row has them (older entries may lack them).
        whole = "probs" in hits and hits["probs"].map(lambda p: isinstance(p, dict)).all()
        write_parquet(hits[["id", "label", "score", *(["probs"] if whole else [])]], target)
        served.append(model.slug)
    return served


def add_to_cache(
    store: RunStore,
    cache: Path,
    committee: Sequence[CommitteeMember],
    versions: dict[str, int],
    chunk: int,
    device: str,
) -> None:
    rows = pd.read_parquet(store.input_chunk(chunk), columns=["id", "text"])
    for model in committee:
        if versions[model.slug] != 0:
            continue
        key = cache_key(store, model, device)
        voted = pd.read_parquet(store.model_votes(model.slug, chunk))
        votes = rows.merge(voted[[c for c in VOTE_COLUMNS if c in voted]], on="id")
        known = _cached(cache, key)
        merged = votes if known is None else pd.concat([known, votes], ignore_index=True)
        merged = merged.drop_duplicates(["id", "text"], keep="last")
        write_parquet(merged, cache / f"{key}.parquet")
