"""Rows/s of the annotate stage on `--engine local` and on a local multi-node Ray cluster of 1, 2
and 4 worker nodes, side by side in one run; the fixed cost per shard and the break-even shard
size derived from the steps' own timings.

Same rows, same demo model(s), one chunk holding every row:
  local      agent.pipeline.annotate.annotate_chunk with LocalEngine: one sandboxed step per model
  ray-wN     the same with RayEngine on a ray.cluster_utils.Cluster of N worker nodes of one CPU
             each (the head takes no tasks), the rows cut into --shards shards per model;
             the cluster is up before the clock starts, its worker processes are not
Each step records its own duration (steps/*.json): a step of n rows costs `fixed + n * per_row`.
Fitting that to the local step (all rows) and the shard steps gives the fixed cost of a shard
(process start, torch import, model load) and the per-row cost; a shard of s rows on w workers
beats one local step once s > fixed / ((w - 1) * per_row) (for large runs): the break-even.
Ray's own cost per shard (scheduling, a worker's start) is wall time minus step time.

    python bench/scale.py [--rows 400] [--models 1] [--shards 4] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray
from ray.cluster_utils import Cluster

from agent.domain import CommitteeMember
from agent.hub.demo import build_demo_hub, demo_input
from agent.hub.local import LocalHub
from agent.pipeline.annotate import Engine, LocalEngine, annotate_chunk
from agent.pipeline.ray_engine import RayEngine
from agent.pipeline.runner import create_run
from agent.scripts.codegen import write_scripts
from agent.task import TaskSpec
from sandbox.base import Limits
from sandbox.local import LocalSandbox

OBJECT_STORE_BYTES = 150 * 1024**2


def annotate_once(models: list, rows: int, engine: Engine) -> dict:
    """Label `rows` tweets once with `engine`: wall seconds and every step's own duration."""
    pool = pd.read_csv(demo_input("sentiment"))
    texts = pool["text"].astype(str).iloc[[i % len(pool) for i in range(rows)]]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "texts.csv"
        pd.DataFrame({"text": texts}).to_csv(data, index=False)
        task = TaskSpec(
            description="sentiment of tweets",
            labels=["negative", "neutral", "positive"],
            data_path=str(data),
            chunk_size=rows,
        )
        store = create_run(task, Path(tmp) / "run")
        entries = [
            CommitteeMember(id=m.id, slug=m.id.replace("/", "__"), source=m.source, labels=m.labels)
            for m in models
        ]
        write_scripts(store, task, entries, ["annotate"])
        for entry, model in zip(entries, models, strict=True):
            target = store.model_dir(entry.slug, 0)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(model.source).resolve())
        store.cut_chunk(0, rows)
        started = time.perf_counter()
        annotate_chunk(
            store,
            LocalSandbox(),
            entries,
            {e.slug: 0 for e in entries},
            0,
            "cpu",
            Limits(threads=1, timeout_s=1800),
            engine=engine,
        )
        seconds = time.perf_counter() - started
        steps = [json.loads(p.read_text()) for p in store.steps_dir.glob("annotate-*.json")]
        return {
            "seconds": seconds,
            "steps": len(steps),
            "step_seconds": sum(s["duration_s"] for s in steps),
            "labels": {
                e.slug: pd.read_parquet(store.model_votes(e.slug, 0))["label"].tolist()
                for e in entries
            },
        }


def on_cluster(models: list, rows: int, workers: int, shard_rows: int) -> dict:
    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={
            "num_cpus": 0,
            "object_store_memory": OBJECT_STORE_BYTES,
            "include_dashboard": False,
        },
    )
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
        cluster.wait_for_nodes()
        return annotate_once(models, rows, RayEngine(shard_rows=shard_rows))
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--models", type=int, default=1, help="demo models in the committee")
    parser.add_argument("--shards", type=int, default=4, help="shards per model on Ray")
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    hub = LocalHub(build_demo_hub())
    labels = {"negative", "neutral", "positive"}
    models = [m for m in hub.list_models() if set(m.labels) == labels][: args.models]
    shard_rows = math.ceil(args.rows / args.shards)
    work = args.rows * len(models)

    runs = {"local": annotate_once(models, args.rows, LocalEngine())}
    for workers in (int(w) for w in args.workers.split(",")):
        runs[f"ray-w{workers}"] = on_cluster(models, args.rows, workers, shard_rows)
        print(f"ray-w{workers}: {runs[f'ray-w{workers}']['seconds']:.1f}s", file=sys.stderr)

    local = runs["local"]
    shard = runs[f"ray-w{args.workers.split(',')[0]}"]
    # A step of n rows costs fixed + n * per_row: the local steps (all rows) and the shard
    # steps (shard_rows each) are two points of that line.
    local_step = local["step_seconds"] / local["steps"]
    shard_step = shard["step_seconds"] / shard["steps"]
    per_row = (local_step - shard_step) / (args.rows - shard_rows)
    fixed = shard_step - shard_rows * per_row
    result = {
        "models": [m.id for m in models],
        "rows": args.rows,
        "shard_rows": shard_rows,
        "seconds": {name: run["seconds"] for name, run in runs.items()},
        "rows_per_s": {name: work / run["seconds"] for name, run in runs.items()},
        "speedup_vs_local": {name: local["seconds"] / run["seconds"] for name, run in runs.items()},
        "same_labels_as_local": {
            name: run["labels"] == local["labels"] for name, run in runs.items()
        },
        "step_fixed_s": fixed,
        "step_per_row_s": per_row,
        # Ray's own cost per shard on one worker: wall time not spent inside a step.
        "ray_overhead_per_shard_s": (shard["seconds"] - shard["step_seconds"]) / shard["steps"],
        "break_even_shard_rows": {
            f"w{w}": fixed / ((w - 1) * per_row) if per_row > 0 else None for w in (2, 4)
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
