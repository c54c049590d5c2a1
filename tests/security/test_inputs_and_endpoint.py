"""Hostile inputs and misbehaving endpoints end in one line and exit 2 with nothing half-written,
and LLM-written code never runs unconfined unless the user asked for `--sandbox local`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import sandbox.factory
from agent.cli.app import app
from agent.pipeline.runner import create_run
from agent.store.runstore import MAX_TEXT_CHARS
from agent.task import TaskSpec
from sandbox.base import SandboxError
from tests.fixtures.keywords import LABELS, WORDS, write_data
from tests.fixtures.llm import FakeOpenAI

runner = CliRunner()


def one_line_error(result) -> str:
    """The single line a user error prints, after checking it is exit 2 and no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return " ".join(result.output.split())


def cli(*args) -> object:
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})


# --- 1. a huge text is cut before anything reads it --------------------------------------------


def test_a_50_mb_text_is_cut_to_max_text_chars_and_flagged(tmp_path, caplog):
    data = tmp_path / "data.csv"
    huge = "the day was good " * (50_000_000 // 17)
    data.write_text(f"text\nbad day\n{huge}\nok day\n", encoding="utf-8")
    task = TaskSpec(description="sentiment", labels=LABELS, data_path=str(data))
    with caplog.at_level(logging.WARNING):
        store = create_run(task, tmp_path / "run")
    rows = pd.read_parquet(store.input_path)
    assert rows["text"].str.len().max() <= MAX_TEXT_CHARS
    assert rows["text"][1] == huge[:MAX_TEXT_CHARS]
    assert rows["truncated"].tolist() == [False, True, False]
    assert pd.read_parquet(store.input_chunk(0))["text"].str.len().max() <= MAX_TEXT_CHARS
    assert "1 text(s) longer than 20000 characters" in caplog.text


# --- 2. a misbehaving endpoint -----------------------------------------------------------------

NOT_JSON = (200, "text/html", b"<html><body>502 Bad Gateway</body></html>")
BAD_REPLIES = {
    "all-500": (500, "application/json", b'{"error": {"message": "internal error"}}'),
    "all-html": NOT_JSON,
    "chat-500": (500, "application/json", b'{"error": {"message": "internal error"}}'),
    "chat-not-json": NOT_JSON,
    "chat-empty-choices": (
        200,
        "application/json",
        json.dumps(
            {"id": "x", "object": "chat.completion", "created": 0, "model": "fake", "choices": []}
        ).encode(),
    ),
}


class MisbehavingOpenAI(FakeOpenAI):
    """FakeOpenAI that answers badly in `mode` (all-*: every request; chat-*: completions only,
    so the start-up check passes and the run fails mid-way); mode `good` answers well."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        super().__init__(LABELS, WORDS)

    def _handler(self):
        fake = self

        class Handler(super()._handler()):
            def _raw(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if fake.mode.startswith("all-"):
                    return self._raw(*BAD_REPLIES[fake.mode])
                return super().do_GET()

            def do_POST(self):
                if fake.mode == "good":
                    return super().do_POST()
                self.rfile.read(int(self.headers["Content-Length"]))
                return self._raw(*BAD_REPLIES[fake.mode])

        return Handler


@pytest.mark.parametrize("mode", list(BAD_REPLIES))
def test_a_misbehaving_endpoint_is_one_line_and_the_run_resumes(tmp_path, hub_dir, mode):
    data = write_data(tmp_path / "data.csv", 12)
    # One text past MAX_TEXT_CHARS, to see its flag reach labels.parquet and labels.csv.
    frame = pd.read_csv(data)
    frame.loc[0, "text"] = "the day was good " * (MAX_TEXT_CHARS // 10)
    frame.to_csv(data, index=False)
    run_dir = tmp_path / "run"
    with MisbehavingOpenAI(mode) as server:
        endpoint = ["--llm-base-url", server.base_url, "--llm-api-key", "k", "--llm-model", "fake"]
        result = cli(
            "run", "--data", data, "--labels", ",".join(LABELS), "--task", "sentiment of texts",
            "--k", 2, "--hub", hub_dir, "--sandbox", "local", "--codegen", "template",
            "--run-dir", run_dir, "--quiet", *endpoint,
        )  # fmt: skip
        message = one_line_error(result)
        assert server.base_url in message and "--llm-base-url" in message
        assert not run_dir.with_name("run.partial").exists()
        if mode.startswith("all-"):  # refused by the start-up check: nothing written
            assert not run_dir.exists()
            return
        assert f"autoannotator resume {run_dir}" in message
        server.mode = "good"
        resumed = cli("resume", run_dir, "--hub", hub_dir, "--sandbox", "local", "-q", *endpoint)
    assert resumed.exit_code == 0, resumed.output
    for path, read in (("labels.parquet", pd.read_parquet), ("labels.csv", pd.read_csv)):
        labels = read(run_dir / path)
        assert labels["aa_truncated"].tolist() == [True] + [False] * 11


# --- 3. run directory problems -----------------------------------------------------------------


def read_only_dir(tmp_path: Path) -> Path:
    """A folder nobody may create a run in; root ignores file modes, so for root one the kernel
    refuses to anyone (sysfs)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder if not os.access(folder, os.W_OK) else Path("/sys")


@pytest.mark.parametrize("case", ["read-only", "under-a-file", "is-a-file"])
def test_a_run_dir_that_cannot_be_written_is_one_line(tmp_path, hub_dir, case):
    data = write_data(tmp_path / "data.csv", 4)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me", encoding="utf-8")
    run_dir = {
        "read-only": read_only_dir(tmp_path) / "autoannotator-run",
        "under-a-file": blocker / "run",
        "is-a-file": blocker,
    }[case]
    result = cli(
        "run", "--data", data, "--labels", ",".join(LABELS), "--task", "sentiment of texts",
        "--hub", hub_dir, "--sandbox", "local", "--codegen", "template", "--reviewer", "none",
        "--run-dir", run_dir, "--quiet",
    )  # fmt: skip
    message = one_line_error(result)
    assert str(run_dir) in message and "--run-dir" in message
    assert not run_dir.with_name(run_dir.name + ".partial").exists()
    assert blocker.read_text(encoding="utf-8") == "keep me"


# --- 4. a blank label ---------------------------------------------------------------------------


@pytest.mark.parametrize("labels", ["positive, ,negative", "positive,negative,"])
def test_a_blank_label_is_an_error_not_dropped(tmp_path, hub_dir, labels):
    data = write_data(tmp_path / "data.csv", 4)
    run_dir = tmp_path / "run"
    result = cli(
        "run", "--data", data, "--labels", labels, "--task", "sentiment of texts",
        "--hub", hub_dir, "--sandbox", "local", "--reviewer", "none", "--run-dir", run_dir,
    )  # fmt: skip
    assert "is empty; remove the extra comma from --labels" in one_line_error(result)
    assert not run_dir.exists()


# --- 5. no unconfined LLM-written code by surprise ----------------------------------------------


@pytest.fixture
def no_engine(monkeypatch):
    """`--sandbox auto` finds no Docker engine, as on a machine without one."""

    def refuse(*args, **kwargs):
        raise SandboxError("no Docker engine answers (test)")

    monkeypatch.setattr(sandbox.factory, "connect", refuse)


def test_without_an_engine_auto_runs_templates_not_llm_scripts(
    tmp_path, hub_dir, no_engine, caplog
):
    data = write_data(tmp_path / "data.csv", 6)
    run_dir = tmp_path / "run"
    with FakeOpenAI(LABELS, WORDS) as server:
        result = cli(
            "run", "--data", data, "--labels", ",".join(LABELS), "--task", "sentiment of texts",
            "--k", 1, "--hub", hub_dir, "--codegen", "llm", "--reviewer", "none",
            "--llm-base-url", server.base_url, "--llm-api-key", "k", "--llm-model", "fake",
            "--run-dir", run_dir, "--quiet",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not server.requests, "the LLM was asked to write scripts"
    manifest = json.loads((run_dir / "scripts" / "manifest.json").read_text(encoding="utf-8"))
    assert {entry["origin"] for entry in manifest["scripts"]} == {"template"}
    assert "pass --sandbox local" in caplog.text  # logging's last-resort handler prints it
    assert json.loads((run_dir / "task.json").read_text(encoding="utf-8"))["codegen"] == "template"


def test_without_an_engine_rerun_refuses_an_llm_written_script(scripted_run_dir, no_engine):
    result = cli("scripts", scripted_run_dir, "rerun", "deploy")
    message = one_line_error(result)
    assert "written by the LLM" in message and "--sandbox local" in message


def test_without_an_engine_resume_refuses_a_run_with_llm_written_scripts(
    scripted_run_dir, no_engine, tmp_path
):
    result = cli("resume", scripted_run_dir, "--hub", tmp_path, "--quiet")
    message = one_line_error(result)
    assert "written by the LLM" in message and "--sandbox local" in message
