"""AutoAnnotator against the LLM labeling every row alone, end to end, side by side in one run.

Part 1, the local LLM (bundled Qwen2.5-Coder-1.5B on llama.cpp), on `--rows` tweets of
../shared/data/tweeteval_sentiment (test split, seeded), each method from a cold start:
  llm alone      the run's review prompt for every row, one call per row, the server on all
                 cores (server start included)
  autoannotator  a full run: demo catalog, LocalSandbox, templates (--codegen template), β
                 small enough for at least one fine-tune cycle, the LLM reviewing hard rows
                 (server start, selection, deploy, annotate, review, fine-tune, report)
Each: wall seconds, rows/s, LLM calls, accuracy and macro-F1 against the gold labels (which
neither method sees).

Part 2, a remote endpoint simulated by the loopback fake with `--latency` seconds per answer:
the review of `--fake-rows` samples one per call and 20 per call, sequential
(--llm-concurrency 1) against concurrent (--llm-concurrency N).

    python -m bench.end_to_end [--rows 1000] [--beta 100[,1000000000]] [--chunk-size 200]
        [--skip-local] [--routing uncertainty,gain,margin] [--alone-rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from agent.hub.demo import build_demo_hub
from agent.hub.local import LocalHub
from agent.llm.client import LLMClient
from agent.llm.endpoint import Endpoint
from agent.llm.local_server import open_endpoint
from agent.pipeline.report import read_labels
from agent.pipeline.review import LLMReviewer, ReviewItem
from agent.pipeline.runner import RunOptions, create_run, open_reviewer, run_graph
from agent.store.ledger import ledger_totals
from agent.task import TaskSpec
from sandbox.local import LocalSandbox
from tests.fixtures.llm import FakeOpenAI

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweeteval_sentiment"
LABELS = ["negative", "neutral", "positive"]
DESCRIPTION = "sentiment of tweets: is the author positive, negative or neutral"


def scores(predicted: pd.Series, gold: pd.Series) -> dict:
    """Accuracy and macro-F1 over every row; a row left without a label counts as wrong."""
    predicted = predicted.fillna("(none)").astype(str)
    return {
        "accuracy": round(float(accuracy_score(gold, predicted)), 4),
        "macro_f1": round(float(f1_score(gold, predicted, labels=LABELS, average="macro")), 4),
    }


def paid_calls(ledger: Path) -> int:
    return ledger_totals(ledger)["calls"]


def make_task(rows: Path, **fields) -> TaskSpec:
    return TaskSpec(
        description=DESCRIPTION,
        labels=LABELS,
        data_path=str(rows),
        gold_column="gold",  # scoring only: gold_evidence 0, the run never sees it
        codegen="template",
        **fields,
    )


def llm_alone(rows: Path, work: Path, options: RunOptions) -> dict:
    started = time.perf_counter()
    store = create_run(make_task(rows, beta=10**9), work / "llm-alone")
    frame = store.rows()
    with ExitStack() as stack:
        endpoint = stack.enter_context(open_endpoint(n_threads=os.cpu_count()))
        options = RunOptions(hub=options.hub, sandbox=options.sandbox, endpoint=endpoint)
        reviewer = open_reviewer(store.task(), store, options, stack, endpoint)
        items = [ReviewItem(id=r["id"], text=r["text"], votes={}) for _, r in frame.iterrows()]
        verdicts = reviewer.review(items)
    seconds = time.perf_counter() - started
    labels = pd.Series({v.id: v.label for v in verdicts}).reindex(frame["id"])
    return {
        "method": "llm alone",
        "seconds": round(seconds, 1),
        "rows_per_s": round(len(frame) / seconds, 3),
        "llm_calls": paid_calls(store.ledger_path),
        **scores(labels.reset_index(drop=True), frame["gold"].reset_index(drop=True)),
    }


def autoannotator(
    rows: Path, work: Path, options: RunOptions, beta: int, chunk: int, routing: str
) -> dict:
    started = time.perf_counter()
    task = make_task(rows, beta=beta, chunk_size=chunk, routing=routing)
    store = create_run(task, work / f"autoannotator-{routing}-beta{beta}")
    state = run_graph(store, options, resume=False)
    seconds = time.perf_counter() - started
    labels = read_labels(store)
    gold = store.rows().set_index("id").loc[labels["id"], "gold"].reset_index(drop=True)
    return {
        "method": f"autoannotator, --routing {routing}, --beta {beta}",
        "seconds": round(seconds, 1),
        "rows_per_s": round(len(labels) / seconds, 3),
        "llm_calls": paid_calls(store.ledger_path),
        **scores(labels["label"], gold),
        "finetune_cycles": state.get("cycles", 0),
        "escalated": state.get("escalated", 0),
        "stages_s": {k: round(v, 1) for k, v in store.timings().items()},
    }


def fake_review(texts: list[str], latency: float, batch: int, concurrency: int) -> dict:
    items = [ReviewItem(id=str(i), text=t, votes={}) for i, t in enumerate(texts)]
    with FakeOpenAI(LABELS, latency_s=latency, fallback="neutral") as fake:
        with tempfile.TemporaryDirectory() as tmp:
            endpoint = Endpoint(base_url=fake.base_url, api_key="test", model="fake")
            with LLMClient.for_endpoint(endpoint, Path(tmp)) as client:
                reviewer = LLMReviewer(
                    client, LABELS, DESCRIPTION, batch_size=batch, concurrency=concurrency
                )
                started = time.perf_counter()
                reviewer.review(items)
                seconds = time.perf_counter() - started
        calls = sum(fake.requests.values())
    return {
        "batch": batch,
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "samples_per_s": round(len(items) / seconds, 1),
        "calls": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument(
        "--beta", default="100", help="comma-separated: one run each (1000000000: no fine-tuning)"
    )
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fake-rows", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--routing", default="uncertainty", help="comma-separated: one run each")
    parser.add_argument(
        "--alone-rows", type=int, default=0, help="the LLM alone on the first N rows (0: all)"
    )
    parser.add_argument("--skip-local", action="store_true", help="part 2 only")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-end-to-end"))
    args = parser.parse_args()

    test = pd.read_csv(DATA / "test.csv").sample(n=args.rows, random_state=args.seed)
    for batch in (1, 20):
        for concurrency in (1, args.concurrency):
            texts = test["text"].head(args.fake_rows).tolist()
            row = fake_review(texts, args.latency, batch, concurrency)
            print(
                json.dumps({"part": f"fake endpoint, {args.latency}s latency", **row}), flush=True
            )
    if args.skip_local:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.out))
    rows = work / "rows.csv"
    test.rename(columns={"label": "gold"}).to_csv(rows, index=False)
    options = RunOptions(hub=LocalHub(build_demo_hub()), sandbox=LocalSandbox(), device="cpu")
    runs = []
    for routing in args.routing.split(","):
        for beta in args.beta.split(","):
            ours = autoannotator(rows, work, options, int(beta), args.chunk_size, routing)
            print(json.dumps({"part": "local LLM", "rows": args.rows, **ours}), flush=True)
            runs.append(ours)
    # The LLM alone's rows/s is a rate: --alone-rows measures it on the first rows only.
    alone_rows = work / "alone-rows.csv"
    test.rename(columns={"label": "gold"}).head(args.alone_rows or None).to_csv(
        alone_rows, index=False
    )
    alone = llm_alone(alone_rows, work, options)
    print(json.dumps({"part": "local LLM", "rows": args.alone_rows or args.rows, **alone}))
    for ours in runs:
        print(
            f"{ours['method']}: {ours['rows_per_s'] / alone['rows_per_s']:.2f}x the LLM alone's "
            f"rows/s, accuracy {ours['accuracy']:.1%} vs {alone['accuracy']:.1%}, "
            f"macro-F1 {ours['macro_f1']:.3f} vs {alone['macro_f1']:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
