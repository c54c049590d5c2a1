"""The README's demo path for real: demo catalog, local llama.cpp reviewer, default sandbox."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_demo_labels_bundled_tweets_end_to_end(tmp_path):
    if importlib.util.find_spec("llama_cpp") is None and os.environ.get("CI") != "true":
        pytest.skip("the local LLM is not installed (scripts/install.sh llm)")
    run_dir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli.app",
            "demo",
            "--rows",
            "160",
            "--chunk-size",
            "80",
            "--beta",
            "15",
            "--run-dir",
            str(run_dir),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(run_dir / "labels.parquet") in result.stdout
    labels = pd.read_parquet(run_dir / "labels.parquet")
    assert len(labels) == 160 and labels["aa_id"].is_unique
    assert {"committee", "llm"} <= set(labels["aa_source"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["llm"]["calls"] >= metrics["by_source"]["llm"] > 0
    assert 0.05 < metrics["escalation_rate"] < 0.9
    assert metrics["accuracy_vs_gold"] > 0.45
    assert metrics["finetune_cycles"], "β=15 should trigger at least one fine-tune cycle"
