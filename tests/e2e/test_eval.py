"""`autoannotator eval` prints the paper's table columns for each method it ran."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from agent.cli.app import app
from agent.store.runstore import RunStore
from tests.fixtures.keywords import LABELS, write_data


def oracle_eval(data: Path, hub_dir: Path, run_dir: Path, *extra: str):
    """`autoannotator eval` of `data` with the oracle reviewer on the tiny hub, locally, on CPU."""
    return CliRunner(env={"COLUMNS": "200"}).invoke(
        app,
        [
            "eval", "--data", str(data), "--gold-column", "gold", "--labels", ",".join(LABELS),
            "--task", "sentiment of short texts", "--reviewers", "oracle", "--beta", "1000",
            "--hub", str(hub_dir), "--sandbox", "local", "--device", "cpu",
            "--run-dir", str(run_dir), "--quiet", *extra,
        ],
    )  # fmt: skip


def test_eval_with_the_oracle_scores_slms_committee_and_autoannotator(tmp_path, hub_dir):
    data = write_data(tmp_path / "labeled.csv", 30, blanks=())
    result = oracle_eval(data, hub_dir, tmp_path / "eval", "--chunk-size", "32")
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "eval" / "eval.json").read_text())
    methods = [row["method"] for row in table["rows"]]
    assert sum(m.startswith("SLM only:") for m in methods) == 3
    assert "SLM committee (majority vote)" in methods
    oracle = table["rows"][methods.index("AutoAnnotator + human (oracle)")]
    committee = table["rows"][methods.index("SLM committee (majority vote)")]
    # The oracle fixes every routed sample, so it can only match or beat the committee.
    assert float(oracle["accuracy"].rstrip("%")) >= float(committee["accuracy"].rstrip("%"))
    assert oracle["llm_calls"] == 0
    # Per-class scores and the confusion matrix (scikit-learn) for each method.
    assert set(oracle["scores"]["per_class"]) == set(LABELS)
    assert sum(map(sum, oracle["scores"]["confusion"]["matrix"])) == oracle["scores"]["rows"]
    markdown = (tmp_path / "eval" / "eval.md").read_text()
    assert markdown.count("| true \\ predicted |") == len(methods)
    assert table["columns"] == [
        "method",
        "accuracy",
        "macro_f1",
        "llm_calls",
        "escalated",
        "seconds",
        "peak_mb",
    ]
    assert "AutoAnnotator + human (oracle)" in result.output


def test_eval_grid_over_k_and_beta_writes_one_table_and_reuses_v0_votes(tmp_path, hub_dir):
    data = write_data(tmp_path / "labeled.csv", 24, blanks=())
    root = tmp_path / "grid"
    result = oracle_eval(data, hub_dir, root, "--k", "2,3", "--chunk-size", "12")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(root / "ablation.csv")
    assert list(zip(table["k"], table["beta"], strict=True)) == [(2, 1000), (3, 1000)]
    assert (table["accuracy"] > 0).all() and (table["reviewer"] == "oracle").all()
    markdown = (root / "ablation.md").read_text()
    assert "| k \\ β | 1000 |" in markdown
    assert markdown.count("%") >= 2

    # The k=3 committee holds the k=2 one's models: their v0 votes on the same rows come from
    # the cache, so only the third model's annotate script runs, and the votes are the same.
    small, large = (
        RunStore(root / "k2-beta1000" / "oracle"),
        RunStore(root / "k3-beta1000" / "oracle"),
    )
    shared = [m["slug"] for m in json.loads(small.models_path.read_text())["models"]]
    assert set(shared) < {m["slug"] for m in json.loads(large.models_path.read_text())["models"]}
    # One annotate step per model version, not per chunk (pipeline.annotate labels ahead): the
    # k=2 run's two models once each over both chunks, the k=3 run its third model only.
    assert small.n_chunks() == large.n_chunks() == 2
    assert table["annotate_runs"].tolist() == [2, 1]
    for slug in shared:
        pd.testing.assert_frame_equal(
            pd.read_parquet(small.model_votes(slug, 0)), pd.read_parquet(large.model_votes(slug, 0))
        )


def test_eval_grid_refuses_a_bad_list(tmp_path):
    result = CliRunner().invoke(
        app,
        ["eval", "--data", "x.csv", "--labels", "a,b", "--task", "thing", "--k", "2,x"],
    )
    assert result.exit_code == 2
    assert "--k takes whole numbers" in result.output


def test_the_llm_only_row_counts_the_calls_batched_review_made(tmp_path, llm_options):
    from agent.pipeline.evaluate import llm_alone_row
    from agent.pipeline.runner import create_run
    from agent.task import TaskSpec

    data = write_data(tmp_path / "labeled.csv", 30, blanks=())
    task = TaskSpec(
        description="sentiment of short texts",
        labels=LABELS,
        data_path=str(data),
        gold_column="gold",
        review_batch=20,
    )
    store = create_run(task, tmp_path / "run")
    row = llm_alone_row(store, task, llm_options(hub=None, sandbox=None), sample=10)
    # 10 samples in one batch of 20: one call, projected to the 30 labeled rows.
    assert row["llm_calls"] == "1 (all 30 rows: ~3)"
    assert row["accuracy"] == "100.00%"
