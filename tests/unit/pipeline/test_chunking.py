import pandas as pd
import pytest

from agent.pipeline.chunking import (
    expert_rate,
    max_chunks,
    next_chunk_size,
    plan_chunk,
    rows_until_finetune,
)
from agent.store.runstore import RunStore, write_parquet
from tests.fixtures.runs import make_store


def review(store: RunStore, chunk: int, sources: list[str]) -> None:
    """What review leaves behind for a chunk: one row per routed sample with its source."""
    ids = pd.read_parquet(store.input_chunk(chunk))["id"][: len(sources)]
    write_parquet(pd.DataFrame({"id": ids, "source": sources}), store.hard_chunk(chunk))


@pytest.mark.parametrize(
    ("pool", "rate", "remaining", "size"),
    [
        (0, None, 10_000, 1000),  # nothing seen yet: the configured size
        (0, 0.25, 10_000, 2000),  # 500 hard samples needed at 25%: 2000 rows
        (400, 0.25, 10_000, 400),  # 100 more needed
        (490, 0.25, 10_000, 250),  # 40 rows would do, but never under a quarter of chunk_size
        (0, 0.01, 10_000, 4000),  # 50 000 rows would be needed; never over 4x chunk_size
        (0, 0.0, 10_000, 4000),  # no escalation at all: the largest chunk
        (0, 0.25, 2100, 2100),  # a 100-row remainder joins this chunk
        (0, 0.25, 700, 700),  # the last rows
    ],
)
def test_next_chunk_size_aims_at_beta_within_bounds(pool, rate, remaining, size):
    assert next_chunk_size(1000, 500, pool, rate, remaining) == size


def test_each_chunk_is_sized_from_observed_escalation_and_cut_once(tmp_path):
    store = make_store(tmp_path, n=200, chunk_size=20, beta=30)
    assert store.n_chunks() == 1 and store.chunk_rows(0) == 20
    # Chunk 0: 8 routed, 6 of them with an expert label (the others had no usable answer).
    review(store, 0, ["oracle"] * 6 + ["needs_human", "unreviewed"])
    assert expert_rate(store, [0]) == pytest.approx(6 / 20)
    # 24 more expert labels are needed at 30%: 80 rows.
    assert plan_chunk(store, 1, pool_chunks=[0], pool_size=6) == 80
    rows_1 = pd.read_parquet(store.input_chunk(1))
    assert rows_1["text"].tolist() == [f"t{i}" for i in range(20, 100)]
    # A resume finds the chunk already cut and never re-splits, whatever the state says now.
    assert plan_chunk(store, 1, pool_chunks=[], pool_size=0) == 80
    pd.testing.assert_frame_equal(pd.read_parquet(store.input_chunk(1)), rows_1)

    # Right after a cycle the pool is empty: the last chunk's rate sizes the next one.
    review(store, 1, ["llm"] * 40)
    assert plan_chunk(store, 2, pool_chunks=[], pool_size=0) == 60
    # 40 rows are left, more than the lower bound (5): the last chunk takes all of them.
    review(store, 2, ["oracle"] * 6)
    assert plan_chunk(store, 3, pool_chunks=[2], pool_size=6) == 40
    assert store.rows_left(4) == 0
    assert max_chunks(store) >= 4


def test_chunks_are_cut_in_order(tmp_path):
    store = make_store(tmp_path, n=50, chunk_size=10, beta=5)
    with pytest.raises(RuntimeError, match="chunk 2 cut before chunk 1"):
        store.cut_chunk(2, 10)


def test_rows_until_finetune_follow_the_rate_that_sizes_chunks(tmp_path):
    store = make_store(tmp_path, n=200, chunk_size=20, beta=30)
    # Before any review: the committee's expected escalation, else nothing is known.
    assert rows_until_finetune(store, 0, [], 0, expected_rate=0.25) == 120
    assert rows_until_finetune(store, 0, [], 0) is None
    review(store, 0, ["oracle"] * 6)  # 30% of chunk 0's 20 rows
    # 24 more expert labels at 30%: 80 rows from chunk 1's first on.
    assert rows_until_finetune(store, 1, [0], 6, expected_rate=0.9) == 80
    review(store, 0, [])  # a chunk where nothing came back: no estimate
    assert rows_until_finetune(store, 1, [0], 0) is None
