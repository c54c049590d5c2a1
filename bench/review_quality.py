"""How good an annotator is the reviewer LLM alone, bare and with what a run gives it?

On N rows of each dataset's test split (rows no demo model trained on), the LLM reviewer labels
every row by itself, one sample per call, in five configurations:
  bare          the Table B prompt: label names, task, the text
  descriptions  + one line per label the LLM drafted from the task (the default without
                --label-desc; agent.pipeline.review.draft_label_descriptions)
  shots4        + the 4 nearest labeled rows as examples (--review-shots 4)
  shots8        + the 8 nearest
  both          descriptions + 4 shots
The examples come from the dataset's train split, standing in for the run's labeled rows:
embedded with the same MiniLM encoder and picked by the same ExampleSelector (label-balanced,
nearest last). Each configuration prints one JSON line: accuracy, macro-F1 (scikit-learn), the
recall of every label, what it answered, and seconds per sample (answers from the cache take
no time: `calls` says how many were asked). The LLM is the run's default: OPENAI_BASE_URL, or
the local llama.cpp server on the bundled model.

    python -m bench.review_quality [--rows 300] [--datasets tweeteval_sentiment,...]
        [--configs bare,descriptions,shots4,shots8,both] [--pool 4000]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import platformdirs
from sklearn.metrics import f1_score, recall_score

from agent.committee.selection import encode
from agent.llm.client import LLMClient
from agent.llm.local_server import open_endpoint
from agent.pipeline.review import LLMReviewer, ReviewItem, draft_label_descriptions
from agent.pipeline.shots import ExampleSelector, Tier

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = {
    "tweeteval_sentiment": "sentiment of tweets",
    "financial_phrasebank_50agree": "sentiment of financial news for an investor",
}
CONFIGS = {
    "bare": {"descriptions": False, "shots": 0},
    "descriptions": {"descriptions": True, "shots": 0},
    "shots4": {"descriptions": False, "shots": 4},
    "shots8": {"descriptions": False, "shots": 8},
    "both": {"descriptions": True, "shots": 4},
}
NO_LABEL = "(none)"


def examples_for(items: list[ReviewItem], train: pd.DataFrame, k: int, vectors) -> list[ReviewItem]:
    """Each item with its k nearest train rows as examples (train_vectors, test_vectors)."""
    train_vectors, test_vectors = vectors
    candidates = pd.DataFrame(
        {
            "id": [f"train-{i}" for i in train.index],
            "text": train["text"].to_numpy(),
            "label": train["label"].to_numpy(),
            "tier": Tier.GOLD,
        }
    )
    chosen = ExampleSelector(candidates, train_vectors, k).select(
        test_vectors, [item.id for item in items]
    )
    return [replace(item, examples=tuple(e)) for item, e in zip(items, chosen, strict=True)]


def score(predicted: list[str | None], gold: list[str], labels: list[str]) -> dict:
    answered = [p if p is not None else NO_LABEL for p in predicted]
    recall = recall_score(gold, answered, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": round(sum(p == g for p, g in zip(answered, gold, strict=True)) / len(gold), 3),
        "macro_f1": round(
            float(f1_score(gold, answered, labels=labels, average="macro", zero_division=0)), 3
        ),
        "recall": {label: round(float(r), 3) for label, r in zip(labels, recall, strict=True)},
        "answers": dict(collections.Counter(answered)),
        "gold": dict(collections.Counter(gold)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", default=",".join(TASKS))
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--pool", type=int, default=4000, help="train rows to draw examples from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cache = Path(platformdirs.user_cache_dir("autoannotator")) / "bench-review-quality"
    with open_endpoint() as endpoint, LLMClient.for_endpoint(endpoint, cache) as client:
        for dataset in args.datasets.split(","):
            test = pd.read_csv(args.data / dataset / "test.csv", keep_default_na=False)
            train = pd.read_csv(args.data / dataset / "train.csv", keep_default_na=False)
            test = test.sample(n=min(args.rows, len(test)), random_state=args.seed)
            train = train.sample(n=min(args.pool, len(train)), random_state=args.seed)
            labels = sorted(set(train["label"]) | set(test["label"]))
            task = TASKS.get(dataset, dataset.replace("_", " "))
            items = [
                ReviewItem(f"test-{i}", text, {})
                for i, text in zip(test.index, test["text"], strict=True)
            ]
            gold = test["label"].tolist()
            started = time.perf_counter()
            vectors = (encode(train["text"].tolist()), encode(test["text"].tolist()))
            embed_seconds = time.perf_counter() - started
            descriptions = None
            for name in args.configs.split(","):
                config = CONFIGS[name]
                calls_before = client.usage.calls
                started = time.perf_counter()
                if config["descriptions"] and descriptions is None:
                    descriptions = draft_label_descriptions(client, task, labels)
                reviewer = LLMReviewer(
                    client,
                    labels,
                    task,
                    label_descriptions=descriptions if config["descriptions"] else None,
                    shots=config["shots"],
                )
                shown = items
                if config["shots"]:
                    shown = examples_for(items, train, config["shots"], vectors)
                verdicts = reviewer.review(shown)
                seconds = time.perf_counter() - started
                print(
                    json.dumps(
                        {
                            "dataset": dataset,
                            "config": name,
                            "model": endpoint.model,
                            "rows": len(items),
                            **score([v.label for v in verdicts], gold, labels),
                            "seconds_per_sample": round(seconds / len(items), 2),
                            "calls": client.usage.calls - calls_before,
                            "descriptions": descriptions if config["descriptions"] else None,
                            "embed_seconds": round(embed_seconds, 1) if config["shots"] else None,
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
