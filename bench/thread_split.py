"""How the local LLM server and the SLMs should share the CPU, measured on this machine.

A run's stages take turns (annotate, then review, then fine-tune; the graph runs one node at a
time), so the question is what each gets while it runs, and what happens if they overlap:
  review   seconds per review call on the local server (bundled Qwen2.5-Coder-1.5B) with
           `--n_threads` 1 and all cores, bare prompt and with 8 fixed examples (the run's
           default), each on --calls tweets from a fresh cache
  annotate rows/s of a demo MiniLM classifier's batched fp32 forward with torch on 1 thread and
           on all cores, the server up and idle beside it
  overlap  both at once: review calls while torch labels, each on all cores, and split (the
           server 1 thread, torch the rest)
One JSON line each; ratios are what to read, since the machine is shared.

    python -m bench.thread_split [--calls 30] [--rows 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import torch

from agent.hub.demo import build_demo_hub
from agent.llm.client import LLMClient
from agent.llm.local_server import open_endpoint
from agent.pipeline.review import Example, LLMReviewer, ReviewItem
from bench.annotate_throughput import raw_forward

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweeteval_sentiment"
LABELS = ["negative", "neutral", "positive"]
SHOTS = 8


def fixed_examples(train: pd.DataFrame) -> tuple[Example, ...]:
    """8 labeled rows, the labels in turn, as the fixed layout shows before every sample."""
    by_label = [train[train["label"] == label]["text"].tolist() for label in LABELS]
    return tuple(
        Example(by_label[i % len(LABELS)][i // len(LABELS)], LABELS[i % len(LABELS)])
        for i in range(SHOTS)
    )


def review_seconds(endpoint, texts: list[str], examples: tuple[Example, ...]) -> float:
    """Seconds per call, each text reviewed alone from a fresh cache."""
    items = [ReviewItem(str(i), t, {}, examples) for i, t in enumerate(texts)]
    with (
        tempfile.TemporaryDirectory() as cache,
        LLMClient.for_endpoint(endpoint, Path(cache)) as client,
    ):
        reviewer = LLMReviewer(client, LABELS, "sentiment of tweets", shots=len(examples))
        started = time.perf_counter()
        reviewer.review(items)
        return (time.perf_counter() - started) / len(items)


def forward_rows_per_s(model_dir: Path, texts: list[str], threads: int) -> float:
    torch.set_num_threads(threads)
    return len(texts) / raw_forward([model_dir], texts, batch_size=64, int8=False)


def overlap(
    endpoint, texts: list[str], examples, model_dir: Path, rows: list[str], torch_threads: int
) -> dict:
    """Review calls in a thread while torch labels `rows` again and again until they finish."""
    result: dict[str, float] = {}
    worker = threading.Thread(
        target=lambda: result.update(s=review_seconds(endpoint, texts, examples))
    )
    torch.set_num_threads(torch_threads)
    worker.start()
    labeled, started = 0, time.perf_counter()
    while worker.is_alive():
        raw_forward([model_dir], rows, batch_size=64, int8=False)
        labeled += len(rows)
    speed = labeled / (time.perf_counter() - started)
    worker.join()
    return {"rows_per_s": round(speed), "s_per_call": round(result["s"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    test = pd.read_csv(DATA / "test.csv").sample(n=args.calls * 8, random_state=0)
    batches = iter([test["text"].tolist()[i::8] for i in range(8)])
    train = pd.read_csv(DATA / "train.csv")
    examples = fixed_examples(train)
    model_dir = build_demo_hub() / "demo__minilm-sentiment-tweets"
    rows = train["text"].head(args.rows).tolist()

    def report(part: str, **values) -> None:
        print(json.dumps({"part": part, "cpus": cpus, **values}), flush=True)

    for server in sorted({1, cpus}):
        with open_endpoint(n_threads=server) as endpoint:
            for name, shown in (("bare", ()), ("fixed8", examples)):
                seconds = review_seconds(endpoint, next(batches), shown)
                report("review", server_threads=server, prompt=name, s_per_call=round(seconds, 2))
            for threads in sorted({1, cpus}):
                speed = forward_rows_per_s(model_dir, rows, threads)
                report("annotate, server idle", torch_threads=threads, rows_per_s=round(speed))
            # Both at once: each on all cores, and the split (server 1 thread, torch the rest).
            torch_threads = cpus if server == cpus else max(1, cpus - server)
            found = overlap(endpoint, next(batches), examples, model_dir, rows, torch_threads)
            report("overlap", server_threads=server, torch_threads=torch_threads, **found)


if __name__ == "__main__":
    main()
