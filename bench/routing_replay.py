"""Replay a finished run's reviews as routing by margin would have asked them.

For each share, a copy of the run keeps the reviewer's verdicts only on that share of each
chunk's routed rows with the narrowest committee margins (agent.pipeline.annotate's own
`narrowest_margins`), routes the rest direct, runs the trust stage again and scores the final
labels against the gold column of the run's input. Only the routed rows' answers change, so
the difference is what reviewing fewer rows costs, without asking the LLM again (the committee
of a run that fine-tuned voted with versions trained on every review: replay runs without
fine-tuning, `--beta 1000000000`, for a clean answer).

    python -m bench.routing_replay RUN_DIR [RUN_DIR ...] [--shares 1,0.8,0.6,0.4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from agent.committee import trust
from agent.domain import Route
from agent.pipeline import trust as pipeline_trust
from agent.pipeline.annotate import narrowest_margins
from agent.store.runstore import RunStore, write_parquet

# What the replay does not read: models, scripts and scratch are the bulk of a run directory.
NOT_COPIED = shutil.ignore_patterns("models", "ahead", "scratch", "scripts", "*.sqlite")


def replay(run: Path, share: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy, ignore=NOT_COPIED)
        store = RunStore(copy)
        labels = list(store.task().labels)
        members = store.committee()
        kept, routed = set(), 0
        for path in store.voted_chunks():
            votes = pd.read_parquet(path)
            prior = pipeline_trust.committee_prior(votes, [m.slug for m in members], labels)
            margin = pd.Series(trust.top_two_margin(prior), index=votes.index)
            routed += int((votes["route"] == Route.REVIEW).sum())
            votes["route"] = narrowest_margins(votes["route"], margin, share)
            kept |= set(votes.loc[votes["route"] == Route.REVIEW, "id"])
            write_parquet(votes, path)
        for path in store.hard_chunks():
            hard = pd.read_parquet(path)
            write_parquet(hard[hard["id"].isin(kept)], path)
        pipeline_trust.update(store, members)
        final = pd.read_parquet(store.posterior_path).set_index("id")
    gold = pd.read_parquet(run / "input.parquet").set_index("id")["gold"].astype(str)
    truth = gold.loc[final.index]
    correct = (final["label"] == truth).to_numpy()
    return {
        "run": f"{run.parent.name}/{run.name}",
        "share": share,
        "reviewed": len(kept),
        "routed": routed,
        "accuracy": round(accuracy_score(truth, final["label"]), 4),
        "macro_f1": round(f1_score(truth, final["label"], average="macro"), 4),
        "ece": round(trust.expected_calibration_error(final["confidence"].to_numpy(), correct), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--shares", default="1,0.8,0.6,0.4")
    args = parser.parse_args()
    for run in args.runs:
        for share in (float(s) for s in args.shares.split(",")):
            print(json.dumps(replay(run, share)), flush=True)


if __name__ == "__main__":
    main()
