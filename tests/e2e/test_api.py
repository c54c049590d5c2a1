"""The Python API: the README's example runs as written; a paused run resumes by directory."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from agent.api import label, resume
from agent.cli.review import answer_interrupt, label_keys
from agent.domain import OUTPUT_COLUMNS, Reported
from agent.errors import UserError
from agent.store.runstore import RunStore
from tests.fixtures.keywords import LABELS, write_data
from tests.fixtures.llm import FakeOpenAI

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(
        r"<!-- api-example -->\n```python\n(.*?)```\n<!-- /api-example -->", text, re.S
    )
    assert block, "the README lost its API example"
    return block.group(1)


def test_the_readme_example_runs_on_the_fixtures(tmp_path, hub_dir, monkeypatch, capsys):
    """Run as written, with the engine's defaults pointed at the fixtures through the
    environment, as a user points them at their own hub and endpoint."""
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path / "tweets.csv", 24)
    with FakeOpenAI(LABELS) as fake:
        monkeypatch.setenv("AUTOANNOTATOR_HUB", str(hub_dir))
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("AUTOANNOTATOR_LLM_MODEL", "fake")
        namespace: dict = {}
        exec(compile(readme_example(), "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.finished and result.run_dir == Path("runs/notebook")
    given = pd.read_csv(tmp_path / "tweets.csv")
    labels = result.labels
    assert list(labels.columns) == [*given.columns, *(f"aa_{c}" for c in OUTPUT_COLUMNS)]
    assert len(labels) == len(given) and labels["aa_source"].eq("skipped").sum() == 1
    assert labels["aa_label"].dropna().isin(LABELS).all()
    assert (result.run_dir / "report.md").is_file()
    printed = capsys.readouterr().out
    assert "Reported(" in printed and "aa_label" in printed  # progress=print, then the head


def test_a_paused_run_resumes_by_directory_with_progress(tmp_path, hub_dir):
    data = write_data(tmp_path / "data.csv", 20)
    frame = pd.read_csv(data, keep_default_na=False)
    gold = {str(i): g for i, g in enumerate(frame["gold"])}
    events: list = []
    paused = label(
        frame,
        labels=LABELS,
        task="sentiment of short texts",
        run_dir=tmp_path / "run",
        reviewer="human",
        chunk_size=10,
        beta=1000,
        max_length=32,
        hub=str(hub_dir),
        sandbox="local",
        device="cpu",
        progress=events.append,
    )
    assert not paused.finished and paused.labels is None
    # The DataFrame went to disk beside the run, as the file the run reads.
    assert (tmp_path / "run.input.parquet").is_file()
    store = RunStore(paused.run_dir)
    keys = {label: key for key, label in label_keys(LABELS).items()}
    quiet = Console(file=io.StringIO())

    def answer_all(payload):
        answers = iter(keys[gold[item["id"]]] for item in payload["items"])
        return answer_interrupt(store, payload, quiet, read_key=lambda: next(answers))

    done = resume(paused.run_dir, hub=str(hub_dir), sandbox="local", device="cpu",
                  on_interrupt=answer_all, progress=events.append)  # fmt: skip
    assert done.finished and done.metrics["by_source"]["human"] > 0
    human = done.labels[done.labels["aa_source"] == "human"]
    assert (human["aa_label"] == human["aa_id"].map(gold)).all()
    assert any(isinstance(event, Reported) for event in events)


def test_bad_options_raise_the_clis_one_line_error(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b"]})
    with pytest.raises(UserError, match="give at least 2 labels"):
        label(frame, labels=["only"], task="sentiment", run_dir=tmp_path / "run")
    with pytest.raises(UserError, match="no column 'body'"):
        label(frame, labels=["x", "y"], task="sentiment", run_dir=tmp_path / "r2",
              text_column="body")  # fmt: skip
    assert not (tmp_path / "run").exists() and not (tmp_path / "r2").exists()
