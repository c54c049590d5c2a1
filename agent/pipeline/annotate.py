"""One chunk through the committee: every SLM's votes (from one annotate step per model
version and window of rows, see annotate_chunk), then vote and route.

An annotate step depends only on its inputs (a model directory and a file of rows), so steps
can later be fanned out to workers without changing this contract.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from agent.committee import trust
from agent.committee.consensus import decide
from agent.domain import CommitteeMember, Route, Routing
from agent.errors import Rejected, StepFailed
from agent.pipeline import trust as pipeline_trust
from agent.scripts.codegen import fresh_dir
from agent.scripts.contract import (
    VOTES_OUTPUT,
    annotate_args,
    inspect_step,
    read_precision,
    validate_votes,
)
from agent.scripts.verify import save_result
from agent.store.runstore import RunStore, write_json, write_parquet
from agent.task import TaskSpec
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


# Rows one annotate step labels at most. A step's fixed cost (process start, torch import,
# model load: ~5 s on 2 cores) is then ~2% of a step that labels this many rows with a small
# classifier, while a version replaced by a fine-tune soon after wastes at most this many rows.
LOOKAHEAD_ROWS = 5000
# How far past the rows a fine-tune is expected after a step looks: an estimate short by a few
# rows costs another round of steps for the chunk it left out (12-20 s on 2 cores for three
# MiniLMs), a row labeled by a version replaced sooner than expected ~0.02 s.
LOOKAHEAD_SLACK = 1.25


@dataclass(frozen=True)
class AnnotateJob:
    """One model version labeling a file of rows (an annotate step): paths and values only, so
    a worker on another machine can run it (label_file) where the run directory is mounted."""

    run_dir: Path
    slug: str
    version: int
    chunk: int  # the chunk whose ahead rows (RunStore.ahead_input) the job labels
    labels: tuple[str, ...]  # the model's own label space, which its votes must keep to
    task: TaskSpec
    device: str
    limits: Limits

    @property
    def name(self) -> str:
        """The step's name: its log is steps/<name>.json."""
        return f"annotate-{self.slug}-v{self.version}-{self.chunk:06d}"


def label_file(
    sandbox: Sandbox, job: AnnotateJob, inputs: Path, name: str | None = None
) -> tuple[pd.DataFrame, dict]:
    """Run `job`'s annotate script on the rows in `inputs` as step `name` (default: the job's):
    its checked votes and precision.

    Depends only on its arguments and the files they name, so any worker can run it."""
    store = RunStore(job.run_dir)
    name = name or job.name
    model_dir = store.model_dir(job.slug, job.version)
    scratch = scratch_dir(store, name)
    try:
        run_step(
            sandbox,
            store,
            name,
            store.script_path("annotate", job.slug),
            annotate_args(
                model_dir,
                inputs,
                scratch / "votes.parquet",
                job.task,
                job.device,
                job.limits.threads,
            ),
            inputs=[model_dir, inputs],
            output_dir=scratch,
            limits=job.limits,
            output=VOTES_OUTPUT,
        )
        ids = pd.read_parquet(inputs, columns=["id"])
        votes = validate_votes(scratch / "votes.parquet", ids, list(job.labels))
        return votes, read_precision(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class Step:
    """One sandboxed script run (run_step's arguments): paths and values only, so a worker on
    another machine can run it where the run directory is mounted."""

    run_dir: Path
    name: str
    script: Path
    args: tuple[str, ...]
    inputs: tuple[Path, ...]
    output_dir: Path
    limits: Limits
    output: dict  # the caps inspect_step checks (contract.VOTES_OUTPUT / MODEL_OUTPUT)
    device: str = "cpu"  # the one its script is told (--device): an engine grants a GPU for cuda

    def run(self, sandbox: Sandbox) -> None:
        run_step(
            sandbox,
            RunStore(self.run_dir),
            self.name,
            self.script,
            list(self.args),
            list(self.inputs),
            self.output_dir,
            self.limits,
            self.output,
        )


# Called by an engine with each job's checked votes and precision as soon as it has them, so
# the votes of a job that finished are kept even when another job of the same chunk fails.
KeepVotes = Callable[[AnnotateJob, pd.DataFrame, dict], None]


class Engine(Protocol):
    """Who runs a chunk's annotate jobs: this process (pipeline.engine.LocalEngine) or a Ray
    cluster (pipeline.ray_engine.RayEngine). Every job's votes cover every row of `inputs`."""

    name: str

    def annotate(
        self, sandbox: Sandbox, jobs: list[AnnotateJob], inputs: Path, keep: KeepVotes
    ) -> None: ...

    def run_steps(self, sandbox: Sandbox, steps: list[Step], done: Callable[[Step], None]) -> None:
        """Run independent steps (one fine-tune per SLM), calling `done` as each succeeds."""
        ...

    def step_threads(self, limits: Limits, steps: int) -> int:
        """The CPU threads each of `steps` steps run together by run_steps gets (its script's
        --threads)."""
        ...

    def lookahead_rows(self) -> int:
        """The most rows a model version labels in one go (annotate_chunk's window cap)."""
        ...

    def describe(self) -> str: ...


class LocalEngine:
    """Every job in one sandboxed step on this machine, side by side, each with its share of
    the CPU threads."""

    name = "local"

    def annotate(
        self, sandbox: Sandbox, jobs: list[AnnotateJob], inputs: Path, keep: KeepVotes
    ) -> None:
        def one(job: AnnotateJob) -> None:
            threads = self.step_threads(job.limits, len(jobs))
            job = replace(job, limits=replace(job.limits, threads=threads))
            keep(job, *label_file(sandbox, job, inputs))

        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            for future in [pool.submit(one, job) for job in jobs]:
                future.result()

    def run_steps(self, sandbox: Sandbox, steps: list[Step], done: Callable[[Step], None]) -> None:
        """Every step at once, each with its share of the threads (step_threads): a training
        loop uses a second thread poorly, so three one-thread fine-tunes side by side on two
        cores took 77 s where the same three one after another with both threads took 98 s;
        `done` as each succeeds, in order."""
        if not steps:
            return
        with ThreadPoolExecutor(max_workers=len(steps)) as pool:
            futures = [pool.submit(step.run, sandbox) for step in steps]
            for step, future in zip(steps, futures, strict=True):
                future.result()
                done(step)

    def step_threads(self, limits: Limits, steps: int) -> int:
        return max(1, limits.threads // max(steps, 1)) if limits.threads else 0

    def lookahead_rows(self) -> int:
        return LOOKAHEAD_ROWS

    def describe(self) -> str:
        return "local (this machine)"


def votes_ahead(store: RunStore, slug: str, version: int, ids: pd.Series) -> pd.DataFrame | None:
    """Version `version`'s checked votes for `ids` from its earlier steps, in `ids` order, or
    None when some id has none yet."""
    files = store.ahead_votes_files(slug, version)
    if not files:
        return None
    known = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    known = known.drop_duplicates("id", keep="last").set_index("id")
    if not ids.isin(known.index).all():
        return None
    return known.loc[ids].reset_index()


def annotate_chunk(
    store: RunStore,
    sandbox: Sandbox,
    committee: Sequence[CommitteeMember],
    versions: dict[str, int],
    chunk: int,
    device: str,
    limits: Limits,
    window: int | None = None,
    engine: Engine | None = None,
) -> None:
    """Write votes/<slug>/<chunk>.parquet for every model that has none yet.

    Load once, label many: a model version that has no votes for this chunk's rows yet labels,
    in one sandboxed step, up to LOOKAHEAD_ROWS rows from this chunk's first on (the rows later
    chunks will hold), and the host keeps the checked votes in ahead/<slug>/v<N>/. Later chunks
    read theirs from there, so a run pays one process start and model load per version and
    window, not per chunk; a fine-tuned version has none and labels what is left. Only rows of
    no finished chunk are ever given to a step, and every step's votes are kept whole once
    checked, so a resumed run neither relabels a finished row nor loses a step's votes.

    `window` (pipeline.chunking.rows_until_finetune): the rows the versions in use are expected
    to label before a fine-tune replaces them; a step labels that many and a quarter more
    (LOOKAHEAD_SLACK; at least this chunk, at most the engine's lookahead_rows), so a version
    about to be replaced labels few rows its successor will label again.

    `engine` runs the steps (default LocalEngine: side by side in this process, each with its
    share of the CPU threads; pipeline.ray_engine.RayEngine: in shards across a Ray cluster).
    """
    task = store.task()
    ids = pd.read_parquet(store.input_chunk(chunk), columns=["id"])["id"]
    todo = []
    for model in committee:
        if store.model_votes(model.slug, chunk).is_file():
            continue
        if votes_ahead(store, model.slug, versions[model.slug], ids) is None:
            todo.append(model)
    engine = engine or LocalEngine()
    if todo:
        inputs = store.ahead_input(chunk)
        if not inputs.is_file():  # fixed once written: the same rows for every model and resume
            cap = engine.lookahead_rows()
            ahead = cap if window is None else min(math.ceil(window * LOOKAHEAD_SLACK), cap)
            write_parquet(store.rows_from(chunk, max(len(ids), ahead)), inputs)
        jobs = [
            AnnotateJob(
                run_dir=store.root,
                slug=model.slug,
                version=versions[model.slug],
                chunk=chunk,
                labels=tuple(model.labels),
                task=task,
                device=device,
                limits=limits,
            )
            for model in todo
        ]

        def keep(job: AnnotateJob, votes: pd.DataFrame, precision: dict) -> None:
            # The host writes its own copy of what it checked: ahead/ is never a script's.
            target = store.ahead_votes(job.slug, job.version, chunk)
            write_json(precision, target.with_suffix(".json"))
            write_parquet(votes, target)

        started = time.perf_counter()
        engine.annotate(sandbox, jobs, inputs, keep)
        store.log_timing(
            "annotate",
            time.perf_counter() - started,
            chunk=chunk,
            rows=len(pd.read_parquet(inputs, columns=["id"])),
            steps=len(todo),
        )
    for model in committee:
        target = store.model_votes(model.slug, chunk)
        if not target.is_file():
            votes = votes_ahead(store, model.slug, versions[model.slug], ids)
            assert votes is not None, "validate_votes checked that the step covers the chunk"
            write_parquet(votes, target)


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
        if "probs" in votes.columns:
            # Its whole distribution, over the task's labels (trust.committee_prior reads it).
            own = trust.task_distribution(
                list(votes.loc[frame["id"], "probs"]), model.label_map, task.labels
            )
            frame[f"{slug}.probs"] = list(own)
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
    prior = (
        pipeline_trust.committee_prior(frame, slugs, task.labels)
        if len(frame)
        else np.zeros((0, len(task.labels)))
    )
    frame["gain"] = _expected_gain(store, prior)
    frame["margin"] = trust.top_two_margin(prior)
    if task.routing == Routing.GAIN and frame["gain"].notna().all():
        frame["route"] = np.where(frame["gain"] >= task.min_gain, Route.REVIEW, Route.DIRECT)
    elif task.routing == Routing.MARGIN:
        frame["route"] = narrowest_margins(frame["route"], frame["margin"], task.margin_share)
    frame["chunk"] = chunk
    frame["versions"] = json.dumps({s: versions[s] for s in slugs})
    write_parquet(frame.drop(columns=["text"]), target)
    store.log_timing("vote", time.perf_counter() - started, chunk=chunk)
    return {"rows": len(frame), "hard": int((frame["route"] == "review").sum())}


def narrowest_margins(route: pd.Series, margin: pd.Series, share: float) -> pd.Series:
    """`route` with only the `share` of its review rows (rounded up) that have the narrowest
    margins still routed to review; the rest go direct (ties broken by row order)."""
    routed = margin[route == Route.REVIEW].sort_values(kind="stable")
    kept = routed.index[: int(np.ceil(share * len(routed)))]
    return route.where(~(route == Route.REVIEW) | route.index.isin(kept), Route.DIRECT)


def _expected_gain(store: RunStore, prior: np.ndarray) -> np.ndarray:
    """Each row's expected gain from one reviewer answer (committee.trust.expected_gain), NaN
    before the reviewer has answered anything."""
    matrix = pipeline_trust.reviewer_matrix(store)
    if matrix is None or not len(prior):
        return np.full(len(prior), np.nan)
    return trust.expected_gain(prior, matrix)


def votes_json(row: dict, slugs: list[str]) -> str:
    return json.dumps({s: row[f"{s}.label"] for s in slugs}, ensure_ascii=False)
