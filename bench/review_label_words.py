"""Does the reviewer LLM label better when it sees words it understands? Before/after.

The financial phrasebank (all annotators agree) relabeled as a user with a trading vocabulary
would: negative -> bearish, positive -> bullish, neutral stays. The LLM reviewer alone labels
the same rows with
  bare         the labels as given (bearish, bullish, neutral), Table B prompt
  descriptions the labels as given, each with a one-line meaning (--label-desc)
  words        shown as negative/positive/neutral, answers mapped back (--label-words)
and we print accuracy and what it answered. The LLM is the run's: OPENAI_BASE_URL, or the local
llama.cpp server on the bundled model. Answers are cached, so a rerun costs nothing.

    python -m bench.review_label_words [--rows 100] [--configs bare,words]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import pandas as pd
import platformdirs

from agent.llm.client import LLMClient
from agent.llm.local_server import open_endpoint
from agent.pipeline.review import LLMReviewer, ReviewItem

DATA = Path(__file__).resolve().parents[2] / "shared/data/financial_phrasebank_allagree/test.csv"
RELABEL = {"negative": "bearish", "positive": "bullish", "neutral": "neutral"}
LABELS = ["bearish", "bullish", "neutral"]
TASK = "sentiment of financial news for an investor"
DESCRIPTIONS = {
    "bearish": "bad news for the company: expects the price to fall",
    "bullish": "good news for the company: expects the price to rise",
    "neutral": "neither good nor bad news",
}
CONFIGS = {
    "bare": {},
    "descriptions": {"label_descriptions": DESCRIPTIONS},
    "words": {"label_words": {"bearish": "negative", "bullish": "positive"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--configs", default="bare,words")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = pd.read_csv(args.data).sample(n=args.rows, random_state=args.seed)
    items = [ReviewItem(str(i), text, {}) for i, text in zip(rows.index, rows["text"], strict=True)]
    gold = rows["label"].map(RELABEL).tolist()
    cache = Path(platformdirs.user_cache_dir("autoannotator")) / "bench-review"
    with open_endpoint() as endpoint, LLMClient.for_endpoint(endpoint, cache) as client:
        for name in args.configs.split(","):
            reviewer = LLMReviewer(client, LABELS, TASK, **CONFIGS[name])
            calls_before = client.usage.calls
            started = time.perf_counter()
            verdicts = reviewer.review(items)
            seconds = time.perf_counter() - started
            predicted = [v.label for v in verdicts]
            correct = sum(p == g for p, g in zip(predicted, gold, strict=True))
            print(
                json.dumps(
                    {
                        "config": name,
                        "model": endpoint.model,
                        "rows": len(items),
                        "accuracy": round(correct / len(items), 3),
                        "answers": dict(collections.Counter(map(str, predicted))),
                        "gold": dict(collections.Counter(gold)),
                        "calls": client.usage.calls - calls_before,
                        "seconds": round(seconds, 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
