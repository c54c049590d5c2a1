"""Which rows the reviewer sees: routed rows in arrival order (before) or by expected gain
(now), within a budget of reviewer calls; and routing by gain instead of the paper's U >= ε.

The committee: three TF-IDF + logistic-regression classifiers, each trained on its own 1,500
rows of tweeteval_sentiment's train split (a cheap stand-in for SLMs that disagree as real ones
do). The rows: `--rows` of its test split in two chunks (a third, then the rest). The first
chunk is routed by the paper's rule and measures the reviewer (review, audit, trust); the second
is reviewed within each `--budgets` number of calls. The reviewer: the bundled local LLM
(`--reviewer llm`, each row asked once and its answer reused by every variant) or a simulated
one that never says "neutral" and is wrong on 10% of the rest (`--reviewer blind`).
Scored on the second chunk against gold: accuracy, macro-F1, calls, and the expected
calibration error of the final labels' confidence.

`--probs` runs, instead, the paper's routing with every routed row reviewed twice: the members'
votes as label and score only (the committee's distribution spreads 1 - score evenly), and with
each member's probability for every label (the annotate contract's `probs`).

    python -m bench.routing [--reviewer llm|blind] [--rows 750] [--budgets 50,100] [--probs]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline

from agent.committee.trust import expected_calibration_error
from agent.domain import CommitteeMember, Route, Source
from agent.hub.local import LocalHub
from agent.pipeline import trust
from agent.pipeline.annotate import vote_chunk
from agent.pipeline.hardpool import audit_chunk, review_chunk
from agent.pipeline.report import assemble_labels
from agent.pipeline.review import ReviewItem, Verdict
from agent.pipeline.runner import RunOptions, open_reviewer
from agent.store.runstore import RunStore, prepare_input, write_parquet
from agent.task import TaskSpec
from sandbox.local import LocalSandbox

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweeteval_sentiment"
LABELS = ["negative", "neutral", "positive"]
TRAIN_ROWS = 1500


class Remembered:
    """A reviewer whose answers are asked once per row and reused by every variant; past
    `budget` answers in a chunk, `committee-capped` like --max-llm-calls."""

    name = "llm"

    def __init__(self, answer) -> None:
        self.answer, self.answers, self.left = answer, {}, None

    def review(self, items: list[ReviewItem]) -> list[Verdict]:
        out = []
        for item in items:
            if self.left is not None and self.left <= 0:
                out.append(Verdict(item.id, None, Source.CAPPED, raw=""))
                continue
            if self.left is not None:
                self.left -= 1
            if item.id not in self.answers:
                self.answers[item.id] = self.answer(item)
            out.append(Verdict(item.id, self.answers[item.id], Source.LLM, raw=""))
        return out


def _committee() -> list:
    train = pd.read_csv(DATA / "train.csv").sample(frac=1.0, random_state=0)
    return [
        make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=500)).fit(
            part["text"], part["label"]
        )
        for part in (train.iloc[i * TRAIN_ROWS : (i + 1) * TRAIN_ROWS] for i in range(3))
    ]


def _variant(root: Path, rows: pd.DataFrame, members, reviewer: Remembered, variant: dict):
    root.mkdir(parents=True)
    rows.to_csv(root / "rows.csv", index=False)
    task = TaskSpec(
        description="sentiment of tweets",
        labels=LABELS,
        data_path=str(root / "rows.csv"),
        gold_column="gold",
        chunk_size=len(rows) // 3,
        routing=variant["routing"],
    )
    store = RunStore.create(root / "run", task, prepare_input(task))
    models = [
        CommitteeMember(
            id=f"tfidf-{i}", slug=f"tfidf-{i}", source="", labels=LABELS,
            label_map={y: y for y in LABELS},
        )
        for i in range(len(members))
    ]  # fmt: skip
    for chunk, size in enumerate((len(rows) // 3, len(rows) - len(rows) // 3)):
        store.cut_chunk(chunk, size)
        texts = pd.read_parquet(store.input_chunk(chunk))
        for model, member in zip(models, members, strict=True):
            proba = member.predict_proba(texts["text"])
            votes = {"id": texts["id"], "label": member.classes_[proba.argmax(1)]}
            if variant.get("probs"):
                votes["probs"] = [dict(zip(member.classes_, row, strict=True)) for row in proba]
            write_parquet(
                pd.DataFrame({**votes, "score": proba.max(1)}), store.model_votes(model.slug, chunk)
            )
        vote_chunk(store, models, {m.slug: 0 for m in models}, chunk)
        if chunk and variant["order"] == "arrival":
            votes = pd.read_parquet(store.chunk_votes(chunk)).assign(gain=float("nan"))
            write_parquet(votes, store.chunk_votes(chunk))
        reviewer.left = variant["budget"] if chunk else None
        review_chunk(store, reviewer, models, chunk)
        reviewer.left = None
        audit_chunk(store, reviewer, models, chunk)
        trust.update(store, models)
    second = pd.read_parquet(store.chunk_votes(1))
    final = assemble_labels(store, models).set_index("id").loc[second["id"]]
    labels = final["label"]
    gold = store.rows().set_index("id").loc[second["id"], "gold"]
    correct = (labels == gold).to_numpy()
    hard = pd.read_parquet(store.hard_chunk(1))
    return {
        **variant,
        "accuracy": round(float(accuracy_score(gold, labels)), 4),
        "macro_f1": round(float(f1_score(gold, labels, average="macro")), 4),
        "ece": round(
            expected_calibration_error(final["confidence"].to_numpy(dtype=float), correct), 4
        ),
        "plurality": round(float(accuracy_score(gold, second["label"])), 4),
        "routed": int((second["route"] == Route.REVIEW).sum()),
        "calls": int((hard["source"] == Source.LLM).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviewer", choices=("llm", "blind"), default="llm")
    parser.add_argument("--rows", type=int, default=750)
    parser.add_argument("--budgets", default="50,100")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--probs", action="store_true", help="votes without vs with probs")
    args = parser.parse_args()
    rows = pd.read_csv(DATA / "test.csv").sample(n=args.rows, random_state=args.seed)
    rows = rows.rename(columns={"label": "gold"}).reset_index(drop=True)  # ids: row numbers
    members = _committee()
    variants = [
        {"routing": "uncertainty", "order": order, "budget": int(budget)}
        for budget in args.budgets.split(",")
        for order in ("arrival", "gain")
    ]
    variants += [
        {"routing": routing, "order": "gain", "budget": None} for routing in ("uncertainty", "gain")
    ]
    if args.probs:
        variants = [
            {"routing": "uncertainty", "order": "gain", "budget": None, "probs": probs}
            for probs in (False, True)
        ]
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        if args.reviewer == "llm":
            task = TaskSpec(
                description="sentiment of tweets", labels=LABELS, data_path="-", review_batch=1
            )
            store = RunStore.create(Path(tmp) / "llm", task, pd.DataFrame({"id": [], "text": []}))
            options = RunOptions(hub=LocalHub(Path(tmp)), sandbox=LocalSandbox())
            llm = open_reviewer(task, store, options, stack)
            reviewer = Remembered(lambda item: llm.review([item])[0].label)
        else:
            gold = dict(zip(rows.index.astype(str), rows["gold"], strict=True))
            reviewer = Remembered(lambda item: _blind(item, gold))
        for number, variant in enumerate(variants):
            result = _variant(Path(tmp) / str(number), rows, members, reviewer, variant)
            print(json.dumps({"reviewer": args.reviewer, **result}), flush=True)


def _blind(item: ReviewItem, gold: dict[str, str]) -> str:
    truth = gold[item.id]
    if truth == "neutral":
        return "positive"
    rng = random.Random(item.id)
    return rng.choice(["negative", "positive"]) if rng.random() < 0.1 else truth


if __name__ == "__main__":
    main()
