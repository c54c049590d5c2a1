"""Continual fine-tuning (paper eq. 6-7) with a gate: a new version is kept only if it is better.

Trigger: once the reviewed hard samples collected since the last cycle reach β, annotation
pauses and every SLM is fine-tuned on them. A share of those samples (`GATE_SHARE`) is held out;
vN+1 replaces vN only when its accuracy on that gate beats vN's (or ties with a lower loss),
otherwise vN stays and the cycle is logged as rolled back.
"""

from __future__ import annotations

import time

import pandas as pd

from agent.annotate import run_step
from agent.codegen import script_path
from agent.hardpool import expert_samples
from agent.runstore import RunStore, read_json, write_json, write_parquet
from sandbox.base import Limits, Sandbox

GATE_SHARE = 0.15


def split_gate(samples: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    shuffled = samples.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_gate = max(1, round(len(shuffled) * GATE_SHARE)) if len(shuffled) > 1 else 0
    return shuffled.iloc[n_gate:], shuffled.iloc[:n_gate]


def improved(metrics: dict) -> bool:
    before, after = metrics["before"], metrics["after"]
    if after["rows"] == 0:
        return False
    if after["accuracy"] != before["accuracy"]:
        return after["accuracy"] > before["accuracy"]
    return after["loss"] < before["loss"]


def finetune_cycle(
    store: RunStore,
    sandbox: Sandbox,
    models: list[dict],
    versions: dict[str, int],
    pool_chunks: list[int],
    cycle: int,
    device: str,
    limits: Limits,
) -> tuple[dict[str, int], dict]:
    """Fine-tune every SLM on the pool; returns the versions to use next and the cycle record."""
    task = store.task()
    cycle_dir = store.root / "finetune" / f"cycle-{cycle:03d}"
    record_path = cycle_dir / "cycle.json"
    if record_path.is_file():
        record = read_json(record_path)
        return record["versions_after"], record
    started = time.perf_counter()
    samples = expert_samples(store, pool_chunks)
    train, gate = split_gate(samples[["id", "text", "label"]], task.seed)
    new_versions = dict(versions)
    per_model = {}
    for model in models:
        slug = model["slug"]
        to_model = model["inverse_label_map"]
        train_path = cycle_dir / f"{slug}.train.parquet"
        gate_path = cycle_dir / f"{slug}.gate.parquet"
        write_parquet(train.assign(label=train["label"].map(to_model)), train_path)
        write_parquet(gate.assign(label=gate["label"].map(to_model)), gate_path)
        current = store.model_dir(slug, versions[slug])
        # Cycle N's candidate is always vN, kept or not: a resumed cycle finds its own output.
        candidate_version = cycle
        out = store.model_dir(slug, candidate_version)
        if not (out / "metrics.json").is_file():
            run_step(
                sandbox,
                store,
                f"finetune-{slug}-{cycle:03d}",
                script_path(store, "finetune", slug),
                [
                    "--model",
                    str(current),
                    "--train",
                    str(train_path),
                    "--eval",
                    str(gate_path),
                    "--out",
                    str(out),
                    "--device",
                    device,
                    "--threads",
                    str(limits.threads),
                ],
                inputs=[current, train_path, gate_path],
                output_dir=out,
                limits=limits,
            )
        metrics = read_json(out / "metrics.json")
        kept = improved(metrics)
        if kept:
            new_versions[slug] = candidate_version
        write_json({**metrics, "kept": kept, "from_version": versions[slug]}, out / "gate.json")
        per_model[slug] = {
            "gate_before": metrics["before"]["accuracy"],
            "gate_after": metrics["after"]["accuracy"],
            "kept": kept,
            "version": new_versions[slug],
            "train_seconds": metrics["train_seconds"],
            "peak_rss_mb": metrics.get("peak_rss_mb"),
        }
    record = {
        "cycle": cycle,
        "chunks": pool_chunks,
        "train_rows": len(train),
        "gate_rows": len(gate),
        "models": per_model,
        "versions_after": new_versions,
        "seconds": time.perf_counter() - started,
    }
    write_json(record, record_path)
    store.log_timing("finetune", record["seconds"], cycle=cycle)
    return new_versions, record
