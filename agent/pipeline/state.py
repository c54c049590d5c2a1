"""The graph state: paths and counters only. Data lives in the run directory."""

from __future__ import annotations

from typing import TypedDict


class RunState(TypedDict, total=False):
    run_dir: str
    next_chunk: (
        int  # the chunk the committee labels next (cut when it starts: agent.pipeline.chunking)
    )
    versions: dict[str, int]  # SLM slug -> model version in use (models/<slug>/v<N>)
    pool_chunks: list[int]  # chunks whose reviewed hard samples wait for the next fine-tune
    pool_size: int  # expert-labeled hard samples in those chunks (compared with β)
    cycles: int  # fine-tuning cycles done
    escalated: int  # samples routed to review so far
