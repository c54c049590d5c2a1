"""How good an annotator is the reviewer LLM alone, bare and with what a run gives it?

On N rows of each dataset's test split (rows no demo model trained on), the LLM reviewer labels
every row by itself, one sample per call unless said, in these configurations:
  plain          the Table B prompt: label names, task, the text; no log-probs asked
  bare           the same, asking for the answer tokens' log-probs (a probability per label)
  descriptions   + one line per label the LLM drafted from the task (the default without
                 --label-desc; agent.pipeline.review.draft_label_descriptions)
  fixed4/fixed8  + the same 4/8 typical labeled rows before every sample (--review-shots 8,
                 --review-shot-layout fixed): one prompt prefix the server evaluates once
  nearest4/8     + each sample's own 4/8 nearest labeled rows (--review-shot-layout nearest)
  both           descriptions + fixed8
  both16         descriptions + the same 16 typical labeled rows before every sample
  batch8         fixed8, 8 samples per call (--review-batch 8)
The examples come from the dataset's train split, standing in for the run's labeled rows:
embedded with the same MiniLM encoder and picked by the same ExampleSelector. Each
configuration prints one JSON line: accuracy, macro-F1 (scikit-learn), the recall of every
label, what it answered, seconds per sample, and where the answers carry probabilities, their
calibration (mean confidence, ECE, accuracy above and below 0.9) and the same answers with the
reviewer's label bias divided out (`debiased`, no extra call for `mean`; three for `content_free`):
each sample's label is argmax p(label | text) / prior(label), the prior either the mean of its
distributions over all the samples (label-free; pulls its answers towards balanced labels) or
its distribution for texts that say nothing ("N/A", "", "[MASK]") shown the same examples
(contextual calibration, Zhao et al. 2021). Answers come from a fresh
cache unless --cache is given (then cached answers take no time: `calls` says how many were
asked). The LLM is the run's default: OPENAI_BASE_URL, or the local llama.cpp server on the
bundled model.

    python -m bench.review_quality [--rows 300] [--datasets tweeteval_sentiment,...]
        [--configs bare,descriptions,fixed8,both,...] [--pool 4000] [--cache DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, recall_score

from agent.committee import bias
from agent.committee.selection import encode
from agent.committee.trust import expected_calibration_error
from agent.domain import ShotLayout
from agent.llm.client import LLMClient
from agent.llm.local_server import open_endpoint
from agent.pipeline.review import LLMReviewer, ReviewItem, Verdict, draft_label_descriptions
from agent.pipeline.shots import ExampleSelector, Tier

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = {
    "tweeteval_sentiment": "sentiment of tweets",
    "financial_phrasebank_50agree": "sentiment of financial news for an investor",
    "jigsaw_toxic_sample": "toxicity of Wikipedia talk page comments",
}
# The financial set under the names an investor would give its labels (the setting).
RENAME = {"financial_phrasebank_50agree": {"negative": "bearish", "positive": "bullish"}}
BARE = {
    "descriptions": False,
    "shots": 0,
    "layout": ShotLayout.FIXED,
    "batch": 1,
    "logprobs": True,
    "first_token": False,
}
CONFIGS = {
    "plain": {**BARE, "logprobs": False},
    "bare": BARE,
    "descriptions": {**BARE, "descriptions": True},
    "fixed4": {**BARE, "shots": 4},
    "fixed8": {**BARE, "shots": 8},
    "nearest4": {**BARE, "shots": 4, "layout": ShotLayout.NEAREST},
    "nearest8": {**BARE, "shots": 8, "layout": ShotLayout.NEAREST},
    "both": {**BARE, "descriptions": True, "shots": 8},
    "both16": {**BARE, "descriptions": True, "shots": 16},
    # What a run on the local server asks: one answer token first (LLMReviewer.first_token).
    "first16": {**BARE, "descriptions": True, "shots": 16, "first_token": True},
    "batch8": {**BARE, "shots": 8, "batch": 8},
}
NO_LABEL = "(none)"


def examples_for(
    items: list[ReviewItem], train: pd.DataFrame, k: int, vectors, layout: ShotLayout
) -> list[ReviewItem]:
    """Each item with k train rows as examples (vectors: train_vectors, test_vectors): the
    same typical ones for all, or each item's nearest."""
    train_vectors, test_vectors = vectors
    candidates = pd.DataFrame(
        {
            "id": [f"train-{i}" for i in train.index],
            "text": train["text"].to_numpy(),
            "label": train["label"].to_numpy(),
            "tier": Tier.GOLD,
        }
    )
    selector = ExampleSelector(candidates, train_vectors, k)
    if layout == ShotLayout.FIXED:
        chosen = [selector.typical()] * len(items)
    else:
        chosen = selector.select(test_vectors, [item.id for item in items])
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


def calibration(verdicts: list[Verdict], gold: list[str]) -> dict | None:
    """How well the reviewer's probability of its own answer predicts that it is right."""
    scored = [
        (v.probabilities[v.label], v.label == g)
        for v, g in zip(verdicts, gold, strict=True)
        if v.probabilities and v.label in v.probabilities
    ]
    if not scored:
        return None
    confidence, correct = np.array([c for c, _ in scored]), np.array([r for _, r in scored])
    sure = confidence >= 0.9
    return {
        "with_probability": len(scored),
        "mean_confidence": round(float(confidence.mean()), 3),
        "ece": round(expected_calibration_error(confidence, correct), 3),
        "accuracy_sure": round(float(correct[sure].mean()), 3) if sure.any() else None,
        "rows_sure": int(sure.sum()),
        "accuracy_unsure": round(float(correct[~sure].mean()), 3) if (~sure).any() else None,
    }


def distributions(verdicts: list[Verdict], labels: list[str]) -> np.ndarray:
    """The verdicts' probabilities as rows in label order (those without none)."""
    given = [v.probabilities for v in verdicts if v.probabilities]
    return np.array([[p.get(y, 0.0) for y in labels] for p in given]).reshape(-1, len(labels))


def prior_corrected(verdicts: list[Verdict], prior: np.ndarray, labels: list[str]) -> list:
    """Each verdict's label with the prior divided out of its probabilities as the run does it
    (agent.committee.bias), its own label where it has none."""
    corrected = iter(bias.prior_corrected(distributions(verdicts, labels), prior).argmax(axis=1))
    return [labels[next(corrected)] if v.probabilities else v.label for v in verdicts]


CONTENT_FREE = ("N/A", "", "[MASK]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--datasets", default=",".join(TASKS))
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--pool", type=int, default=4000, help="train rows to draw examples from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="answer cache to reuse (default: a fresh one)")
    args = parser.parse_args()

    cache = args.cache or Path(tempfile.mkdtemp(prefix="review-quality-"))
    with open_endpoint() as endpoint, LLMClient.for_endpoint(endpoint, cache) as client:
        for dataset in args.datasets.split(","):
            test = pd.read_csv(args.data / dataset / "test.csv", keep_default_na=False)
            train = pd.read_csv(args.data / dataset / "train.csv", keep_default_na=False)
            test = test.sample(n=min(args.rows, len(test)), random_state=args.seed)
            train = train.sample(n=min(args.pool, len(train)), random_state=args.seed)
            for frame in (test, train):
                frame["label"] = frame["label"].replace(RENAME.get(dataset, {}))
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
                    batch_size=config["batch"],
                    probabilities=config["logprobs"],
                    first_token=config["first_token"],
                )
                shown = items
                if config["shots"]:
                    shown = examples_for(items, train, config["shots"], vectors, config["layout"])
                verdicts = reviewer.review(shown)
                seconds = time.perf_counter() - started
                debiased = None
                if config["logprobs"] and config["batch"] == 1:
                    free = [
                        replace(shown[0], id=f"content-free-{n}", text=text)
                        for n, text in enumerate(CONTENT_FREE)
                    ]
                    # The run's prior (bias.answer_prior: None under its minimum of answers);
                    # the content-free one is the mean over the three texts.
                    blank = distributions(reviewer.review(free), labels)
                    priors = {
                        "mean": bias.answer_prior(distributions(verdicts, labels)),
                        "content_free": blank.mean(axis=0) if len(blank) else None,
                    }
                    debiased = {
                        name: {
                            "prior": dict(zip(labels, prior.round(3).tolist(), strict=True)),
                            **score(prior_corrected(verdicts, prior, labels), gold, labels),
                        }
                        for name, prior in priors.items()
                        if prior is not None
                    }
                print(
                    json.dumps(
                        {
                            "dataset": dataset,
                            "config": name,
                            "model": endpoint.model,
                            "rows": len(items),
                            **score([v.label for v in verdicts], gold, labels),
                            "calibration": calibration(verdicts, gold),
                            "debiased": debiased,
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
