"""One chunk through the committee: every SLM's annotate script, then vote and route.

`annotate(model_version, chunk) -> votes` depends only on its inputs (a model directory and
a chunk file), so chunks can later be fanned out to workers without changing this contract.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from agent.committee import trust
from agent.committee.consensus import decide
from agent.domain import CommitteeMember, Route
from agent.errors import Rejected, StepFailed
from agent.pipeline import trust as pipeline_trust
from agent.scripts.codegen import fresh_dir
from agent.scripts.contract import VOTES_OUTPUT, annotate_args, inspect_step, validate_votes
from agent.scripts.verify import save_result
from agent.store.runstore import RunStore, write_parquet
from sandbox.base import Limits, Sandbox


def run_step(
    sandbox: Sandbox,
    store: RunStore,
    name: str,
    script: Path,
    args: list[str],
    inputs: list[Path],
    output_dir: Path,
    limits: Limits,
    output: dict,
) -> None:
    """Run one script in the sandbox, save its Result under steps/, raise if it failed or left
    anything unsafe in `output_dir` (caps: contract.VOTES_OUTPUT / MODEL_OUTPUT)."""
    result = sandbox.run(script, args, inputs=inputs, output_dir=output_dir, limits=limits)
    log = store.steps_dir / f"{name}.json"
    save_result(result, log)
    if not result.ok:
        raise StepFailed(f"step {name} failed ({result.reason()}); details in {log}")
    try:
        inspect_step(output_dir, output)
    except Rejected as err:
        raise StepFailed(f"step {name}: {err.reason}") from None


def scratch_dir(store: RunStore, name: str) -> Path:
    """The fresh, empty directory step `name` may write, apart from everything the host keeps."""
    return fresh_dir(store.scratch_dir(name))


def annotate_chunk(
    store: RunStore,
    sandbox: Sandbox,
    committee: Sequence[CommitteeMember],
    versions: dict[str, int],
    chunk: int,
    device: str,
    limits: Limits,
) -> None:
    """Write votes/<slug>/<chunk>.parquet for every model that has none yet.

    The k scripts run side by side, each with its share of the CPU threads: most of a short
    script's time is Python importing torch, which overlaps well.
    """
    task = store.task()
    inputs = store.input_chunk(chunk)
    frame = pd.read_parquet(inputs)
    todo = [m for m in committee if not store.model_votes(m.slug, chunk).is_file()]
    if not todo:
        return
    share = replace(limits, threads=max(1, limits.threads // len(todo)) if limits.threads else 0)

    def one(model: CommitteeMember) -> None:
        slug = model.slug
        name = f"annotate-{slug}-{chunk:06d}"
        model_dir = store.model_dir(slug, versions[slug])
        scratch = scratch_dir(store, name)
        try:
            run_step(
                sandbox,
                store,
                name,
                store.script_path("annotate", slug),
                annotate_args(
                    model_dir, inputs, scratch / "votes.parquet", task, device, share.threads
                ),
                inputs=[model_dir, inputs],
                output_dir=scratch,
                limits=share,
                output=VOTES_OUTPUT,
            )
            votes = validate_votes(scratch / "votes.parquet", frame, model.labels)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        # The host writes its own copy of what it checked: votes/ is never a script's directory.
        write_parquet(votes, store.model_votes(slug, chunk))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        for future in [pool.submit(one, model) for model in todo]:
            future.result()
    store.log_timing("annotate", time.perf_counter() - started, chunk=chunk)


def vote_chunk(
    store: RunStore, committee: Sequence[CommitteeMember], versions: dict[str, int], chunk: int
) -> dict:
    """Combine the committee's votes for one chunk (eq. 2-5) into chunks/<chunk>.parquet."""
    target = store.chunk_votes(chunk)
    if target.is_file():
        frame = pd.read_parquet(target)
        return {"rows": len(frame), "hard": int((frame["route"] == "review").sum())}
    started = time.perf_counter()
    task = store.task()
    frame = pd.read_parquet(store.input_chunk(chunk))
    for model in committee:
        slug = model.slug
        votes = pd.read_parquet(store.model_votes(slug, chunk)).set_index("id")
        raw = votes.loc[frame["id"], "label"].to_numpy()
        frame[f"{slug}.raw"] = raw
        frame[f"{slug}.label"] = [model.label_map[x] for x in raw]
        frame[f"{slug}.score"] = votes.loc[frame["id"], "score"].to_numpy()
    slugs = [m.slug for m in committee]
    decisions = [
        decide(
            [row[f"{s}.label"] for s in slugs],
            [row[f"{s}.score"] for s in slugs],
            task.labels,
            task.routing_threshold,
        )
        for row in frame.to_dict("records")
    ]
    frame["label"] = [d.label for d in decisions]
    frame["uncertainty"] = [d.uncertainty for d in decisions]
    frame["confidence"] = [d.agreement * d.confidence for d in decisions]
    frame["route"] = [d.route for d in decisions]
    frame["gain"] = _expected_gain(store, frame, slugs, task.labels)
    if task.routing == "gain" and frame["gain"].notna().all():
        frame["route"] = np.where(frame["gain"] >= task.min_gain, Route.REVIEW, Route.DIRECT)
    frame["chunk"] = chunk
    frame["versions"] = json.dumps({s: versions[s] for s in slugs})
    write_parquet(frame.drop(columns=["text"]), target)
    store.log_timing("vote", time.perf_counter() - started, chunk=chunk)
    return {"rows": len(frame), "hard": int((frame["route"] == "review").sum())}


def _expected_gain(
    store: RunStore, frame: pd.DataFrame, slugs: list[str], labels: list[str]
) -> np.ndarray:
    """Each row's expected gain from one reviewer answer (committee.trust.expected_gain), NaN
    before the reviewer has answered anything."""
    matrix = pipeline_trust.reviewer_matrix(store)
    if matrix is None or not len(frame):
        return np.full(len(frame), np.nan)
    index = pd.Index(labels)
    prior = trust.committee_distribution(
        np.column_stack([index.get_indexer(frame[f"{s}.label"]) for s in slugs]),
        np.column_stack([frame[f"{s}.score"].to_numpy(dtype=float) for s in slugs]),
        len(labels),
    )
    return trust.expected_gain(prior, matrix)


def votes_json(row: dict, slugs: list[str]) -> str:
    return json.dumps({s: row[f"{s}.label"] for s in slugs}, ensure_ascii=False)
