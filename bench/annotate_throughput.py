"""Samples/s of the committee annotate path vs the paper's per-row loop, side by side.

Three numbers on the same models and the same texts, in one process run:
  naive   the paper's released code: one transformers pipeline call per text, per model
  ours    agent.pipeline.annotate.annotate_chunk: the k annotate scripts in the sandbox, end to end
          (process start, model load, length-sorted batches, inference_mode, output write)
  raw     the models' batched forward alone (pre-tokenized, no I/O): the ceiling for ours
Printed as ratios, since absolute speeds on a shared machine mean little.

    python bench/annotate_throughput.py [--texts 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from agent.domain import CommitteeMember
from agent.hub.demo import build_demo_hub, demo_input
from agent.hub.local import LocalHub
from agent.pipeline.annotate import annotate_chunk
from agent.scripts.codegen import write_scripts
from agent.task import TaskSpec
from sandbox.base import Limits
from sandbox.local import LocalSandbox


def texts(n: int) -> list[str]:
    pool = pd.read_csv(demo_input("sentiment"))["text"].astype(str).tolist()
    return [pool[i % len(pool)] for i in range(n)]


def naive(model_dirs: list[Path], items: list[str]) -> float:
    started = time.perf_counter()
    for model_dir in model_dirs:
        classify = pipeline("text-classification", model=str(model_dir), device="cpu")
        for text in items:
            classify(text, truncation=True, max_length=128)
    return time.perf_counter() - started


def raw_forward(model_dirs: list[Path], items: list[str], batch_size: int) -> float:
    """Forward passes only, on length-sorted pre-tokenized batches."""
    total = 0.0
    ordered = sorted(items, key=len)
    for model_dir in model_dirs:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        batches = [
            tokenizer(
                ordered[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            for i in range(0, len(ordered), batch_size)
        ]
        with torch.inference_mode():
            started = time.perf_counter()
            for batch in batches:
                model(**batch)
            total += time.perf_counter() - started
    return total


def ours(models: list, items: list[str], threads: int, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "texts.csv"
        pd.DataFrame({"text": items}).to_csv(data, index=False)
        task = TaskSpec(
            description="sentiment of tweets",
            labels=["negative", "neutral", "positive"],
            data_path=str(data),
            chunk_size=len(items),
            batch_size=batch_size,
        )
        from agent.pipeline.runner import create_run

        store = create_run(task, Path(tmp) / "run")
        entries = [
            CommitteeMember(id=m.id, slug=m.id.replace("/", "__"), source=m.source, labels=m.labels)
            for m in models
        ]
        write_scripts(store, task, entries)
        for entry, model in zip(entries, models, strict=True):
            target = store.model_dir(entry.slug, 0)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(model.source).resolve())
        started = time.perf_counter()
        annotate_chunk(
            store,
            LocalSandbox(),
            entries,
            {e.slug: 0 for e in entries},
            0,
            "cpu",
            Limits(threads=threads),
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--task-labels", default="negative,neutral,positive")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    hub = LocalHub(build_demo_hub())
    labels = set(args.task_labels.split(","))
    models = [m for m in hub.list_models() if set(m.labels) == labels][:3]
    dirs = [Path(m.source) for m in models]
    items = texts(args.texts)
    work = len(items) * len(models)

    t_ours = ours(models, items, args.threads, args.batch_size)
    t_raw = raw_forward(dirs, items, args.batch_size)
    t_naive = naive(dirs, items)
    result = {
        "models": [m.id for m in models],
        "texts": len(items),
        "threads": args.threads,
        "samples_per_s": {"naive": work / t_naive, "ours": work / t_ours, "raw": work / t_raw},
        "ours_vs_naive": t_naive / t_ours,
        "ours_vs_raw_forward": t_raw / t_ours,
    }
    print(json.dumps(result, indent=2))
    print(
        f"ours is {result['ours_vs_naive']:.1f}x the per-row loop and "
        f"{result['ours_vs_raw_forward']:.0%} of the raw batched forward"
    )


if __name__ == "__main__":
    main()
