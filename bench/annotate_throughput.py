"""Samples/s of a run's whole annotate stage vs the paper's per-row loop, side by side.

On the same models and the same texts, in one process run:
  naive      the paper's released code: one transformers pipeline call per text, per model
  ours       the annotate stage of a run: agent.pipeline.annotate.annotate_chunk on every chunk
             of --chunk-size rows in turn, the annotate scripts in the sandbox, end to end
             (process starts, model loads, the int8 probe, batches, output writes and checks)
  per_chunk  the same with one step per model per chunk (LOOKAHEAD_ROWS = 0: before issue 18)
  raw        the models' batched fp32 forward alone (pre-tokenized, no I/O)
  raw_int8   the same after dynamic int8 quantization
Printed as ratios, since absolute speeds on a shared machine mean little.

    python bench/annotate_throughput.py [--texts 2000] [--threads 2] [--chunk-size 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import accuracy_score
from torch.ao.quantization import quantize_dynamic
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from agent.domain import CommitteeMember
from agent.hub.demo import build_demo_hub, demo_input
from agent.hub.local import LocalHub
from agent.pipeline import annotate
from agent.pipeline.runner import create_run
from agent.scripts.codegen import write_scripts
from agent.task import TaskSpec
from sandbox.base import Limits
from sandbox.local import LocalSandbox


def texts(n: int) -> tuple[list[str], list[str]]:
    """n texts of the bundled tweets (repeated past the file's end) and their gold labels."""
    pool = pd.read_csv(demo_input("sentiment"))
    picked = [i % len(pool) for i in range(n)]
    return pool["text"].astype(str).iloc[picked].tolist(), pool["label"].iloc[picked].tolist()


def naive(model_dirs: list[Path], items: list[str]) -> float:
    started = time.perf_counter()
    for model_dir in model_dirs:
        classify = pipeline("text-classification", model=str(model_dir), device="cpu")
        for text in items:
            classify(text, truncation=True, max_length=128)
    return time.perf_counter() - started


def raw_forward(model_dirs: list[Path], items: list[str], batch_size: int, int8: bool) -> float:
    """Forward passes only, on length-sorted pre-tokenized batches."""
    total = 0.0
    ordered = sorted(items, key=len)
    for model_dir in model_dirs:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        if int8:
            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
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


def ours(
    models: list, items: list[str], threads: int, batch_size: int, chunk_size: int, per_chunk: bool
) -> tuple[float, int, list[dict]]:
    """(seconds, sandboxed steps, precision records, each model's labels in row order) of
    labeling every chunk of a run."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "texts.csv"
        pd.DataFrame({"text": items}).to_csv(data, index=False)
        task = TaskSpec(
            description="sentiment of tweets",
            labels=["negative", "neutral", "positive"],
            data_path=str(data),
            chunk_size=chunk_size,
            batch_size=batch_size,
        )
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
        lookahead = annotate.LOOKAHEAD_ROWS
        annotate.LOOKAHEAD_ROWS = 0 if per_chunk else lookahead
        started = time.perf_counter()
        try:
            chunk = 0
            while store.rows_left(chunk):
                store.cut_chunk(chunk, chunk_size)
                annotate.annotate_chunk(
                    store,
                    LocalSandbox(),
                    entries,
                    {e.slug: 0 for e in entries},
                    chunk,
                    "cpu",
                    Limits(threads=threads),
                )
                chunk += 1
        finally:
            annotate.LOOKAHEAD_ROWS = lookahead
        seconds = time.perf_counter() - started
        steps = len(list(store.steps_dir.glob("annotate-*.json")))
        records = [json.loads(p.read_text()) for p in (store.root / "ahead").rglob("v0/*.json")]
        labels = {
            entry.id: pd.concat(
                pd.read_parquet(store.model_votes(entry.slug, c)) for c in range(chunk)
            )["label"].tolist()
            for entry in entries
        }
        return seconds, steps, records, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--naive-texts", type=int, default=0, help="0: all of --texts")
    parser.add_argument("--task-labels", default="negative,neutral,positive")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    hub = LocalHub(build_demo_hub())
    labels = set(args.task_labels.split(","))
    models = [m for m in hub.list_models() if set(m.labels) == labels][:3]
    dirs = [Path(m.source) for m in models]
    items, gold = texts(args.texts)
    work = len(items) * len(models)

    def timed(name: str, seconds: float) -> float:
        # Each phase as it ends: a run cut short on a busy machine still reports what it did.
        print(
            f"{name}: {seconds:.1f}s, {work / seconds:.1f} samples/s", file=sys.stderr, flush=True
        )
        return seconds

    t_ours, steps, precision, labels = ours(
        models, items, args.threads, args.batch_size, args.chunk_size, per_chunk=False
    )
    timed("ours", t_ours)
    t_chunked, chunked_steps, _, chunked_labels = ours(
        models, items, args.threads, args.batch_size, args.chunk_size, per_chunk=True
    )
    timed("per_chunk", t_chunked)
    t_raw = timed("raw", raw_forward(dirs, items, args.batch_size, int8=False))
    t_raw_int8 = timed("raw_int8", raw_forward(dirs, items, args.batch_size, int8=True))
    # The per-row loop is slow: on a subset (--naive-texts), its time scaled to all the texts.
    subset = items[: args.naive_texts or len(items)]
    t_naive = timed("naive", naive(dirs, subset) * len(items) / len(subset))
    seconds = {
        "naive": t_naive,
        "ours": t_ours,
        "per_chunk": t_chunked,
        "raw": t_raw,
        "raw_int8": t_raw_int8,
    }
    result = {
        "models": [m.id for m in models],
        "texts": len(items),
        "chunk_size": args.chunk_size,
        "threads": args.threads,
        "steps": {"ours": steps, "per_chunk": chunked_steps},
        "precision": precision,
        "seconds": seconds,
        "samples_per_s": {name: work / t for name, t in seconds.items()},
        # Quality: each model's own accuracy on the bundled gold (its labels mapped by name,
        # as these demo models share the task's), ours against one fp32 step per chunk.
        "accuracy": {
            model: {
                "ours": accuracy_score(gold, labels[model]),
                "per_chunk": accuracy_score(gold, chunked_labels[model]),
                "agreement": accuracy_score(chunked_labels[model], labels[model]),
            }
            for model in labels
        },
        "ours_vs_naive": t_naive / t_ours,
        "ours_vs_per_chunk": t_chunked / t_ours,
        "ours_vs_raw_forward": t_raw / t_ours,
        "ours_vs_raw_int8_forward": t_raw_int8 / t_ours,
    }
    print(json.dumps(result, indent=2))
    print(
        f"ours is {result['ours_vs_naive']:.1f}x the per-row loop, "
        f"{result['ours_vs_per_chunk']:.1f}x one step per chunk, "
        f"{result['ours_vs_raw_forward']:.0%} of the raw fp32 batched forward and "
        f"{result['ours_vs_raw_int8_forward']:.0%} of the raw int8 one"
    )


if __name__ == "__main__":
    main()
