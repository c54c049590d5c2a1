"""Adaptive chunk sizes: each chunk is sized so the reviewed hard pool reaches β at its end.

Fine-tuning can only start between chunks, so with a fixed size the pool overshoots β by up to
a chunk's worth of hard samples and the improved SLMs arrive a chunk late. Instead the first
chunk has `task.chunk_size` rows (written with the run, it is also the selection smoke test's
sample) and every later one has (β - pool) / rate rows, rate being the share of rows that came
back from review with an expert label in the pool's chunks (or, right after a cycle, in the
last chunk). Sizes stay within [chunk_size / 4, 4 * chunk_size]: never so small that starting k
scripts dominates, never so large that progress and resume get coarse. A remainder smaller than
the lower bound joins the chunk before it.

A chunk's rows are cut once, when it is first needed, and written to inputs/NNNNNN.parquet;
a resumed run reads that file back and never re-splits.
"""

from __future__ import annotations

import math

import pandas as pd

from agent.domain import EXPERT_SOURCES
from agent.store.runstore import RunStore

SIZE_RANGE = 4  # chunks are between chunk_size / SIZE_RANGE and chunk_size * SIZE_RANGE rows


def size_bounds(base: int) -> tuple[int, int]:
    return max(1, base // SIZE_RANGE), base * SIZE_RANGE


def next_chunk_size(base: int, beta: int, pool: int, rate: float | None, remaining: int) -> int:
    """Rows for the next chunk: enough for the pool to reach β at its end, within the bounds."""
    low, high = size_bounds(base)
    if rate is None:
        size = base
    elif rate <= 0:
        size = high
    else:
        size = min(max(math.ceil(max(beta - pool, 1) / rate), low), high)
    if remaining - size < low:
        size = remaining
    return min(size, remaining)


def expert_rate(store: RunStore, chunks: list[int]) -> float | None:
    """Share of the rows of `chunks` that review gave an expert label; None with no chunks."""
    rows = expert = 0
    for chunk in chunks:
        rows += store.chunk_rows(chunk)
        hard = pd.read_parquet(store.hard_chunk(chunk), columns=["source"])
        expert += int(hard["source"].isin(EXPERT_SOURCES).sum())
    return expert / rows if rows else None


def plan_chunk(store: RunStore, chunk: int, pool_chunks: list[int], pool_size: int) -> int:
    """Cut chunk `chunk` (once) and return its row count."""
    if not store.input_chunk(chunk).is_file():
        task = store.task()
        recent = pool_chunks or ([chunk - 1] if chunk else [])
        size = next_chunk_size(
            task.chunk_size,
            task.beta,
            pool_size,
            expert_rate(store, recent),
            store.rows_left(chunk),
        )
        store.cut_chunk(chunk, size)
    return store.chunk_rows(chunk)


def rows_until_finetune(
    store: RunStore,
    chunk: int,
    pool_chunks: list[int],
    pool_size: int,
    expected_rate: float | None = None,
) -> int | None:
    """Rows from chunk `chunk`'s first on that the SLM versions in use are expected to label
    before the pool reaches β and a fine-tune replaces them: (β - pool) / rate, the rate as
    plan_chunk sees it, or before any chunk was reviewed `expected_rate` (the committee's
    expected escalation from selection). None when nothing says (no rate, or a rate of 0)."""
    recent = pool_chunks or ([chunk - 1] if chunk else [])
    rate = expert_rate(store, recent)
    if rate is None:
        rate = expected_rate
    if not rate or rate <= 0:
        return None
    return math.ceil(max(store.task().beta - pool_size, 1) / rate)


def estimated_chunks(store: RunStore, chunk: int) -> int:
    """Chunks the run will have if the rest is cut like `chunk` (for progress only)."""
    left = store.rows_left(chunk + 1)
    return chunk + 1 + math.ceil(left / max(store.chunk_rows(chunk), 1))


def max_chunks(store: RunStore) -> int:
    """An upper bound on the run's chunk count: every chunk after the first at the lower bound."""
    low, _ = size_bounds(store.task().chunk_size)
    return 1 + math.ceil(store.n_labelable() / low)
