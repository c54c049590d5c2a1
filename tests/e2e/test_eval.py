"""`autoannotator eval` prints the paper's table columns for each method it ran."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from agent.cli import app
from tests.e2e.conftest import LABELS, write_data


def test_eval_with_the_oracle_scores_slms_committee_and_autoannotator(tmp_path, hub_dir):
    data = write_data(tmp_path / "labeled.csv", 30, blanks=())
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app,
        [
            "eval",
            "--data",
            str(data),
            "--gold-column",
            "gold",
            "--labels",
            ",".join(LABELS),
            "--task",
            "sentiment of short texts",
            "--reviewers",
            "oracle",
            "--beta",
            "1000",
            "--chunk-size",
            "32",
            "--hub",
            str(hub_dir),
            "--sandbox",
            "local",
            "--device",
            "cpu",
            "--run-dir",
            str(tmp_path / "eval"),
            "--quiet",
        ],
    )
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
