"""The review options of `run`: bad values end in one line naming the fix, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from tests.fixtures.llm import FakeOpenAI

runner = CliRunner()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--label-words", "positive"], "--label-words takes label=text, not 'positive'"),
        (["--label-words", "bullish=positive"], "label words for unknown labels: bullish"),
        (
            ["--label-words", "positive=negative"],
            "positive and negative would both be shown to the LLM as 'negative'",
        ),
        (["--label-desc", "=good"], "--label-desc takes label=text"),
        (["--label-desc", "meh=so so"], "descriptions for unknown labels: meh"),
        (["--review-batch", "lots"], "--review-batch takes auto or a number"),
        (["--review-batch", "0"], "review batch is auto or a number of samples per call"),
        (["--price-in", "0.1"], "give both --price-in and --price-out"),
        (["--max-llm-calls", "-1"], "greater than or equal to 0"),
    ],
)
def test_bad_review_options_fail_in_one_line(tmp_path, tiny_hub, options, expected):
    data = tmp_path / "data.csv"
    data.write_text("text\ngood day\nbad day\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    result = runner.invoke(
        app,
        ["run", "--data", str(data), "--labels", "positive,negative", "--task", "sentiment",
         "--hub", str(tiny_hub), "--sandbox", "local", "--run-dir", str(run_dir), *options],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output
    assert expected in " ".join(result.output.split())
    assert not run_dir.exists()


def test_a_cost_cap_on_a_model_without_a_price_asks_for_one(tmp_path, tiny_hub):
    data = tmp_path / "data.csv"
    data.write_text("text\ngood day\nbad day\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    with FakeOpenAI(["positive", "negative"]) as fake:
        args = ["run", "--data", str(data), "--labels", "positive,negative", "--task", "sentiment",
                "--hub", str(tiny_hub), "--sandbox", "local", "--run-dir", str(run_dir),
                "--llm-base-url", fake.base_url, "--llm-api-key", "k", "--llm-model", "mystery",
                "--max-cost", "1"]  # fmt: skip
        result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--max-cost needs the price of mystery" in " ".join(result.output.split())
    assert "--price-in and --price-out" in " ".join(result.output.split())
    assert not run_dir.exists()
