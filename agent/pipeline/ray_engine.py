"""The Ray engine: a chunk's annotate steps cut into shards, each shard one Ray task; each SLM's
fine-tune step one Ray task. The sandbox travels with the task (a DockerSandbox reconnects to
the worker's own Docker engine, sandbox.docker.DockerSandbox.__reduce__).

Why Ray tasks and not Ray Data `map_batches` with an actor pool per SLM: an annotate step is a
sandboxed *process* (the Sandbox protocol: a container or a confined subprocess that loads the
model itself), not a Python callable that could keep a model loaded inside a Ray actor. An
actor pool would only hold a sandbox handle, and Ray Data would add its own batching, object
store copies of the rows and a second retry policy on top of what the step already does. A
task per (model version, shard) keeps the step exactly as on one machine, and Ray's task
retries (`max_retries`, node death included) give the fault tolerance.

Storage: every node reads the shard inputs and model versions from, and writes its shard's
votes to, the run directory, which is a POSIX path every node mounts at the same place (NFS or
any shared filesystem; on one machine, the local disk). Paths then mean the same on every node,
exactly as the sandbox already requires of its inputs, and a shard's votes are kept with the
same atomic tmp + rename as every other file of the run: a retried shard overwrites its file,
it never adds a second copy. The driver (the graph, its LangGraph checkpoint, review,
fine-tuning decisions) stays on the machine that started the run.

`ray` is an optional extra: it is imported here, when an engine is made, and nowhere else.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pandas as pd

from agent.errors import RunError, UserError
from agent.pipeline.annotate import LOOKAHEAD_ROWS, AnnotateJob, KeepVotes, Step, label_file
from agent.scripts.codegen import fresh_dir
from agent.store.runstore import RunStore, read_json, write_json, write_parquet
from sandbox.base import Limits, Sandbox, SandboxError

RAY_MISSING = "--engine ray needs the ray extra: pip install 'autoannotator[ray]'"
# Rows per shard. Each shard pays a step's fixed cost again (process start, torch import, model
# load). bench/scale.py measured it at ~310 rows' worth of labeling on one CPU (a MiniLM
# classifier): 2 workers beat one local step from ~310-row shards, 4 from ~100. At 1,000 rows
# the fixed cost is under a quarter of a shard's time, and a 5,000-row window still makes 5.
DEFAULT_SHARD_ROWS = 1000
# A shard whose node or worker died, or whose sandbox could not start it, runs again elsewhere.
# A script that fails the contract is not retried: it would fail the same way.
SHARD_RETRIES = 3


def import_ray() -> ModuleType:
    """The ray module, or a one-line UserError saying how to install it."""
    try:
        import ray  # noqa: PLC0415 - an optional extra, needed only by this engine
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


def annotate_shard(sandbox: Sandbox, job: AnnotateJob, shard_input: Path, target: Path) -> Path:
    """One Ray task: label the rows in `shard_input`, keep the checked votes in `target`.

    The step's name (its scratch directory and log) is unique to this attempt, so an attempt on
    a node that was given up for dead but still runs never writes into its retry's directory;
    both would leave the same votes in `target`, each whole (write_parquet renames)."""
    name = f"{job.name}-{target.stem}-{uuid.uuid4().hex[:8]}"
    votes, precision = label_file(sandbox, job, shard_input, name=name)
    write_json(precision, target.with_suffix(".json"))
    write_parquet(votes, target)
    return target


def run_one_step(sandbox: Sandbox, step: Step) -> None:
    """One Ray task: a step (one SLM's fine-tune) in an empty output directory, so a retry
    after a lost node starts from nothing."""
    fresh_dir(step.output_dir)
    step.run(sandbox)


class RayEngine:
    """Annotate steps as Ray tasks over shards of the rows, on whichever node has the CPUs (and
    the GPU when the run's device is cuda)."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        shard_rows: int = DEFAULT_SHARD_ROWS,
        cpus_per_shard: int = 1,
    ):
        ray = import_ray()
        self.address = address
        self.shard_rows = shard_rows
        self.cpus_per_shard = cpus_per_shard
        if not ray.is_initialized():
            if address or os.environ.get("RAY_ADDRESS"):
                ray.init(address=address)
            else:  # a laptop: a local instance sized to the machine, no dashboard to serve
                ray.init(include_dashboard=False)
        self._task = ray.remote(annotate_shard)
        self._step = ray.remote(run_one_step)

    def describe(self) -> str:
        ray = import_ray()
        resources = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node["Alive"])
        where = self.address or os.environ.get("RAY_ADDRESS") or "a local instance"
        return (
            f"ray ({where}: {nodes} node(s), {resources.get('CPU', 0):g} CPUs, "
            f"{resources.get('GPU', 0):g} GPUs; {self.shard_rows} rows per shard)"
        )

    def annotate(
        self, sandbox: Sandbox, jobs: list[AnnotateJob], inputs: Path, keep: KeepVotes
    ) -> None:
        ray = import_ray()
        store = RunStore(jobs[0].run_dir)
        directory = store.shards_dir(jobs[0].chunk, self.shard_rows)
        shards = self._cut(pd.read_parquet(inputs), directory)
        submitted = []
        for job in jobs:
            gpus = 1 if job.device == "cuda" else 0
            share = replace(job, limits=replace(job.limits, threads=self.cpus_per_shard))
            task = self._task.options(
                num_cpus=self.cpus_per_shard,
                num_gpus=gpus,
                max_retries=SHARD_RETRIES,
                retry_exceptions=[SandboxError],
            )
            targets = [directory / f"{job.slug}-v{job.version}-{i:05d}.parquet" for i in shards]
            # A shard a driver killed mid-chunk left whole is kept: its rows are not labeled again.
            refs = [
                task.remote(sandbox, share, shards[i], target)
                for i, target in zip(shards, targets, strict=True)
                if not target.is_file()
            ]
            submitted.append((job, targets, refs))
        # Every task is in flight; keep each job's votes as soon as all its shards are in.
        for job, targets, refs in submitted:
            self._wait(ray, job.name, refs)
            votes = pd.concat([pd.read_parquet(t) for t in targets], ignore_index=True)
            keep(job, votes, read_json(targets[0].with_suffix(".json")))
        shutil.rmtree(directory.parent, ignore_errors=True)

    def step_threads(self, limits: Limits, steps: int) -> int:
        return self.cpus_per_shard

    def lookahead_rows(self) -> int:
        """One shard per CPU of the cluster in each window, at least the local engine's cap: a
        window of 5,000 rows would keep a large cluster mostly idle. The window a fine-tune
        allows (rows_until_finetune) still bounds it."""
        cpus = int(import_ray().cluster_resources().get("CPU", 1))
        return max(LOOKAHEAD_ROWS, self.shard_rows * cpus // self.cpus_per_shard)

    def run_steps(self, sandbox: Sandbox, steps: list[Step], done: Callable[[Step], None]) -> None:
        """Every step its own Ray task with its CPU (and GPU when the run's device is cuda)
        share, all in flight at once; `done` as each succeeds, in order."""
        ray = import_ray()
        refs = [
            self._step.options(
                num_cpus=self.cpus_per_shard,
                num_gpus=1 if step.device == "cuda" else 0,
                max_retries=SHARD_RETRIES,
                retry_exceptions=[SandboxError],
            ).remote(sandbox, step)
            for step in steps
        ]
        for step, ref in zip(steps, refs, strict=True):
            self._wait(ray, step.name, [ref])
            done(step)

    def _wait(self, ray: ModuleType, name: str, refs: list) -> None:
        """Wait for `refs`; a task's own error is raised as itself, a lost task as a RunError."""
        try:
            ray.get(refs)
        except ray.exceptions.RayTaskError as err:
            raise err.cause from None  # the step's own error (StepFailed ...), one line
        except ray.exceptions.RayError as err:
            raise RunError(f"{name}: lost after {SHARD_RETRIES} retries ({err})") from None

    def _cut(self, rows: pd.DataFrame, directory: Path) -> dict[int, Path]:
        """`rows` in shards of shard_rows rows, in row order: {shard id: its input file}."""
        shards = {}
        for shard, start in enumerate(range(0, len(rows), self.shard_rows)):
            path = directory / f"input-{shard:05d}.parquet"
            if not path.is_file():  # fixed once written, like the ahead input it is cut from
                write_parquet(rows.iloc[start : start + self.shard_rows], path)
            shards[shard] = path
        return shards
