"""Does asking an unsure reviewer again, with the committee's votes shown, help it or anchor it?

On a copy of a finished run whose input has a gold column (the demo's has), the routed rows of
every chunk are reviewed as the run reviewed them (the run's task, prompt and examples; the
run's LLM cache answers what it already asked), then again with `--review-self-check P` for
each P: an answer whose own probability is below P is asked once more with the committee's
votes per label shown. Scored against gold (which the run never saw): on the rows asked again,
the first answer, the answer after the self-check and the committee's plurality; on all routed
rows, accuracy and macro-F1 of the reviewer's labels with and without the self-check, as
answered and with its lean divided out (agent.committee.bias, as the run takes them). Seconds
per self-check call on the run's endpoint (the local server unless OPENAI_BASE_URL is set).

    python -m bench.review_self_check RUN_DIR [--thresholds 0.6,0.8] [--chunks 0,1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from agent.committee import bias
from agent.committee.selection import encode
from agent.hub.demo import build_demo_hub
from agent.hub.local import LocalHub
from agent.llm.local_server import open_endpoint
from agent.pipeline.review import LLMReviewer, ReviewItem, Verdict
from agent.pipeline.runner import RunOptions, open_reviewer
from agent.pipeline.shots import attach_examples
from agent.store.ledger import ledger_totals
from agent.store.runstore import RunStore
from bench.review_quality import distributions, prior_corrected
from sandbox.local import LocalSandbox


def routed_items(store: RunStore, chunks: list[int]) -> tuple[list[ReviewItem], pd.DataFrame]:
    """The routed rows the run's reviewer answered, as it was asked them, and their hard/ rows."""
    task = store.task()
    items, frames = [], []
    for chunk in chunks:
        hard = pd.read_parquet(store.hard_chunk(chunk))
        hard = hard[hard["source"] == "llm"]
        texts = pd.read_parquet(store.input_chunk(chunk)).set_index("id")["text"]
        chunk_items = [
            ReviewItem(id=row["id"], text=texts[row["id"]], votes=json.loads(row["votes"]))
            for row in hard.to_dict("records")
        ]
        items += attach_examples(
            store, chunk, chunk_items, task.review_shots, encode, task.review_shot_layout
        )
        frames.append(hard)
    return items, pd.concat(frames, ignore_index=True)


def taken(verdicts: list[Verdict], labels: list[str], debias: bool) -> list[str | None]:
    """The labels as the run takes them: as answered, or with the mean distribution of all
    these answers divided out (the run's prior, over every routed answer it has)."""
    prior = bias.answer_prior(distributions(verdicts, labels)) if debias else None
    if prior is None:
        return [v.label for v in verdicts]
    return prior_corrected(verdicts, prior, labels)


def scores(predicted: list, gold: pd.Series, labels: list[str]) -> dict:
    predicted = pd.Series(predicted, index=gold.index).fillna("(none)").astype(str)
    return {
        "accuracy": round(float(accuracy_score(gold, predicted)), 4),
        "macro_f1": round(float(f1_score(gold, predicted, labels=labels, average="macro")), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--thresholds", default="0.6,0.8")
    parser.add_argument("--chunks", default=None, help="comma-separated; default every chunk")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="self-check-"))
    copy = work / args.run.name
    shutil.copytree(args.run, copy)  # the bench's calls go to the copy's cache and ledger
    store = RunStore(copy)
    task = store.task()
    chunks = (
        [int(c) for c in args.chunks.split(",")]
        if args.chunks
        else [int(p.stem) for p in store.hard_chunks()]
    )
    items, hard = routed_items(store, chunks)
    gold = store.rows().set_index("id").loc[hard["id"], task.gold_column].reset_index(drop=True)
    committee = scores(hard["committee_label"].tolist(), gold, task.labels)
    print(json.dumps({"rows": len(items), "committee plurality": committee}), flush=True)
    with ExitStack() as stack:
        endpoint = stack.enter_context(open_endpoint())
        options = RunOptions(hub=LocalHub(build_demo_hub()), sandbox=LocalSandbox())
        first: list[Verdict] = []
        for threshold in [None, *(float(t) for t in args.thresholds.split(","))]:
            reviewer = open_reviewer(
                task.model_copy(update={"review_self_check": threshold}),
                store,
                options,
                stack,
                endpoint,
            )
            assert isinstance(reviewer, LLMReviewer)
            calls_before = ledger_totals(store.ledger_path)["calls"]
            started = time.perf_counter()
            verdicts = reviewer.review(items)
            seconds = time.perf_counter() - started
            calls = ledger_totals(store.ledger_path)["calls"] - calls_before
            if threshold is None:
                first = verdicts
            asked = [
                i
                for i, (item, v) in enumerate(zip(items, first, strict=True))
                if reviewer.unsure(item, v)
            ]
            line = {
                "self_check": threshold,
                "calls": calls,
                "seconds_per_call": round(seconds / calls, 2) if calls else None,
                "asked_again": len(asked),
                "changed": sum(first[i].label != verdicts[i].label for i in asked),
            }
            if asked:
                on_asked = gold.iloc[asked]
                line["on rows asked again"] = {
                    "first answer": scores([first[i].label for i in asked], on_asked, task.labels),
                    "after self-check": scores(
                        [verdicts[i].label for i in asked], on_asked, task.labels
                    ),
                    "committee plurality": scores(
                        hard["committee_label"].iloc[asked].tolist(), on_asked, task.labels
                    ),
                }
            for debias in (False, True):
                name = "lean divided out" if debias else "as answered"
                line[f"all routed, {name}"] = scores(
                    taken(verdicts, task.labels, debias), gold, task.labels
                )
            print(json.dumps(line), flush=True)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
