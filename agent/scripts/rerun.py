"""Run one of a run's scripts again, apart from the run, under the checks a candidate gets.

`autoannotator scripts rerun` shows what a script does now (after a hand edit, on another
device): annotate on chunk 0 with the latest model version, deploy from the model's source,
finetune on the probe set. Each writes into a fresh scratch directory and is checked as in
codegen: the contract, the saved model, the metrics.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from agent.errors import UserError
from agent.scripts import contract, verify
from agent.scripts.codegen import local_source, probe_rows
from agent.store.runstore import RunStore
from sandbox.base import Limits, Result, Sandbox


@dataclass(frozen=True)
class Rerun:
    result: Result
    summary: str  # one line: what came out and that it kept the contract
    scratch: Path


def rerun_dir(store: RunStore, role: str, slug: str) -> Path:
    return store.scratch_dir(f"rerun-{role}-{slug}")


def latest_version(store: RunStore, slug: str) -> Path:
    versions = sorted(
        (p for p in store.model_dir(slug, 0).parent.glob("v*") if (p / "config.json").is_file()),
        key=lambda p: int(p.name[1:]),
    )
    if not versions:
        raise UserError(f"{slug} was never deployed in {store.root}; nothing to run the script on")
    return versions[-1]


def rerun(store: RunStore, entry: dict, box: Sandbox, device: str) -> Rerun:
    """Run the manifest `entry`'s script; raises Rejected (a check failed), StepFailed (the
    model could not be had) or UserError (nothing to run it on)."""
    role, slug = entry["role"], entry["slug"]
    target = {m.slug: m for m in store.committee()}[slug]
    script = store.path(entry["path"])
    scratch = rerun_dir(store, role, slug)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    limits = Limits()
    # The script writes only scratch/out; the host keeps its log beside it, outside.
    output_dir = scratch / "out"
    output_dir.mkdir()
    log = scratch / "result.json"
    if role == "annotate":
        model_dir, chunk = latest_version(store, slug), store.input_chunk(0)
        votes = output_dir / "votes.parquet"
        args = contract.annotate_args(model_dir, chunk, votes, store.task(), device, 0)
        result = verify.run_candidate(
            box, script, args, inputs=[model_dir, chunk], output_dir=output_dir,
            limits=limits, log=log, output=contract.VOTES_OUTPUT,
        )  # fmt: skip
        frame = contract.validate_votes(votes, pd.read_parquet(chunk), target.labels)
        counts = frame["label"].value_counts().to_dict()
        summary = f"{len(frame)} rows of chunk 0, labels {counts}, contract kept"
    elif role == "deploy":
        source = local_source(target.source)
        result = verify.run_candidate(
            box, script, contract.deploy_args(str(source), output_dir),
            inputs=[source], output_dir=output_dir,
            limits=limits, log=log, output=contract.MODEL_OUTPUT,
        )  # fmt: skip
        verify.check_model_dir(
            output_dir, target.labels, source, probe_rows(store)["text"].tolist()
        )
        summary = f"deployed {target.source}: loads, labels {target.labels}"
    elif role == "finetune":
        model_dir = latest_version(store, slug)
        train, gate = verify.finetune_probe(probe_rows(store), target.labels, scratch)
        args = contract.finetune_args(model_dir, train, gate, output_dir, device, 0)
        result = verify.run_candidate(
            box, script, args, inputs=[model_dir, train, gate], output_dir=output_dir,
            limits=limits, log=log, output=contract.MODEL_OUTPUT,
        )  # fmt: skip
        metrics = verify.check_finetune_metrics(
            output_dir / "metrics.json", len(pd.read_parquet(gate))
        )
        summary = (
            f"probe accuracy {metrics['before']['accuracy']:.3f} -> "
            f"{metrics['after']['accuracy']:.3f}, loss {metrics['before']['loss']:.4f} -> "
            f"{metrics['after']['loss']:.4f} (as the script reports them)"
        )
    else:
        raise UserError(f"unknown role {role!r}; use deploy, annotate or finetune")
    return Rerun(result, summary, scratch)
