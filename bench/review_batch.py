"""LLM review: one sample per call vs a batch per call, on both kinds of endpoint.

  metered  tests/fixtures/llm.py on loopback, billing ~4 characters per token like a metered API:
           calls, tokens and cost at gpt-4o-mini prices (what batching saves there)
  local    the llama.cpp server on the bundled model: wall time, calls, tokens, accuracy,
           and how many samples the batch answer missed (they are asked again alone)
The metered fake labels by keyword (its accuracy means nothing). Rows are tweets from the
demo data with their gold sentiment; every measurement starts with an empty cache, so each
call is really made.

    python -m bench.review_batch [--endpoints metered,local] [--rows 40] [--batches 1,20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from agent.hub.demo import demo_input
from agent.llm.client import LLMClient
from agent.llm.endpoint import Endpoint
from agent.llm.local_server import open_endpoint
from agent.llm.pricing import DEFAULT_PRICES
from agent.pipeline.review import LLMReviewer, ReviewItem
from tests.fixtures.llm import FakeOpenAI

LABELS = ["positive", "negative", "neutral"]
TASK = "sentiment of tweets: is the author positive, negative or neutral"
KEYWORDS = {"love": "positive", "great": "positive", "good": "positive",
            "hate": "negative", "bad": "negative", "worst": "negative"}  # fmt: skip


def measure(endpoint: Endpoint, rows: pd.DataFrame, batch: int) -> dict:
    items = [ReviewItem(str(i), t, {}) for i, t in zip(rows.index, rows["text"], strict=True)]
    with (
        tempfile.TemporaryDirectory() as run_dir,
        LLMClient.for_endpoint(endpoint, Path(run_dir)) as client,
    ):
        reviewer = LLMReviewer(client, LABELS, TASK, batch_size=batch)
        started = time.perf_counter()
        verdicts = reviewer.review(items)
        seconds = time.perf_counter() - started
        ledger = [json.loads(x) for x in (Path(run_dir) / "ledger.jsonl").open()]
    usage = client.usage
    price = DEFAULT_PRICES["gpt-4o-mini"]
    return {
        "batch": batch,
        "rows": len(items),
        "calls": usage.calls,
        "alone_after_batch": sum(e["purpose"] == "review" for e in ledger) if batch > 1 else 0,
        "tokens_in": usage.tokens_in,
        "tokens_out": usage.tokens_out,
        "cost_gpt4o_mini_usd": round(
            (usage.tokens_in * price.input + usage.tokens_out * price.output) / 1e6, 6
        ),
        "seconds": round(seconds, 1),
        "s_per_sample": round(seconds / len(items), 2),
        "accuracy": round(
            sum(v.label == g for v, g in zip(verdicts, rows["label"], strict=True)) / len(items), 3
        ),
        "needs_human": sum(v.label is None for v in verdicts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", default="metered,local")
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--batches", default="1,20")
    args = parser.parse_args()
    rows = pd.read_csv(demo_input("sentiment")).sample(n=args.rows, random_state=0)
    batches = [int(b) for b in args.batches.split(",")]
    for kind in args.endpoints.split(","):
        if kind == "metered":
            with FakeOpenAI(LABELS, KEYWORDS, count_tokens=True, fallback="neutral") as fake:
                endpoint = Endpoint(fake.base_url, "test", "gpt-4o-mini")
                for batch in batches:
                    print(json.dumps({"endpoint": kind, **measure(endpoint, rows, batch)}))
        else:
            with open_endpoint() as endpoint:
                for batch in batches:
                    result = measure(endpoint, rows, batch)
                    print(json.dumps({"endpoint": kind, **result}), flush=True)


if __name__ == "__main__":
    main()
