"""Does continual fine-tuning help? The demo committee labels tweets with and without cycles.

Rows: a seeded sample of TweetEval sentiment `test` from the shared data, minus any text the
demo catalog trained on. Reviewer: the oracle (gold labels, the paper's "+Human" row), so the
comparison isolates fine-tuning. The two runs form an `eval` grid over β: a β larger than the
file (no cycle ever) and a small β; they share the v0 vote cache, so a row's vote by an
untouched model is computed once for both. Output: <out>/ablation.md and each run's report.md
with its plots.

    python bench/finetune_evidence.py --rows 600 --beta 100 --out runs/finetune-evidence
"""

from __future__ import annotations

import argparse
import glob
import subprocess
import sys
from pathlib import Path

import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweeteval_sentiment"
DEMO_DATA = Path(__file__).resolve().parents[1] / "agent" / "hub" / "demo_data"
TASK = "sentiment of tweets: is the author positive, negative or neutral"


def normalised(text: str) -> str:
    return " ".join(str(text).lower().split())


def sample(rows: int, path: Path, source: Path) -> Path:
    test = pd.read_csv(source)
    trained = set()
    for csv in glob.glob(str(DEMO_DATA / "sentiment_*.csv")):
        trained |= set(pd.read_csv(csv)["text"].map(normalised))
    clean = test[~test["text"].map(normalised).isin(trained)]
    path.parent.mkdir(parents=True, exist_ok=True)
    clean.sample(n=rows, random_state=0).to_csv(path, index=False)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--beta", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=150)
    parser.add_argument("--replay-ratio", type=float, default=1.0)
    parser.add_argument("--source", type=Path, default=SHARED / "test.csv")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune-evidence"))
    parser.add_argument("--hub", help="model hub folder (default: the demo catalog)")
    args = parser.parse_args()
    data = sample(args.rows, args.out.with_name(args.out.name + ".input.csv"), args.source)
    command = [
        sys.executable,
        "-m",
        "agent.cli.app",
        "eval",
        "--data",
        str(data),
        "--gold-column",
        "label",
        "--labels",
        "negative,neutral,positive",
        "--task",
        TASK,
        "--reviewers",
        "oracle",
        "--k",
        "3",
        "--beta",
        f"{args.beta},{args.rows * 10}",
        "--chunk-size",
        str(args.chunk_size),
        "--replay-ratio",
        str(args.replay_ratio),
        "--sandbox",
        "local",
        "--device",
        "cpu",
        "--run-dir",
        str(args.out),
        "--quiet",
        *(["--hub", args.hub] if args.hub else []),
    ]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
