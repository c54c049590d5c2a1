"""User mistakes end in one line naming the problem and the fix, exit code 2, nothing written."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from agent.cli.app import app

runner = CliRunner()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\ngood day,positive\nbad day,negative\n", encoding="utf-8")
    return path


def invoke(tmp_path, *args):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["run", "--run-dir", str(run_dir), "--sandbox", "local", *args])
    return result, run_dir


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_file", "no such file; check the --data path"),
        (
            "unknown_column",
            "no column 'body' (columns: text, label); pass the right name with --text-column",
        ),
        ("one_label", "give at least 2 labels"),
        ("duplicate_labels", "duplicate labels: positive"),
        ("not_utf8", "is not valid UTF-8"),
        ("empty", "the file is empty"),
        ("unreachable_llm", "no answer from the LLM endpoint"),
        ("unknown_gold", "row 2 of column 'label' holds 'maybe', not one of the task's labels"),
        ("column_clash", "column 'aa_label' has the name of one the run adds to labels.*"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, csv, tiny_hub, case, expected):
    labels, data, extra = "positive,negative", csv, []
    if case == "missing_file":
        data = tmp_path / "nope.csv"
    elif case == "unknown_column":
        extra = ["--text-column", "body"]
    elif case == "one_label":
        labels = "positive"
    elif case == "duplicate_labels":
        labels = "positive,negative,positive"
    elif case == "not_utf8":
        data.write_bytes(b"text\n\xff\xfe bad\n")
    elif case == "empty":
        data.write_bytes(b"")
    elif case == "unknown_gold":
        data.write_text("text,label\ngood day,positive\nso-so day,maybe\n", encoding="utf-8")
        extra = ["--gold-column", "label"]
    elif case == "column_clash":
        data.write_text("text,aa_label\ngood day,x\nbad day,y\n", encoding="utf-8")
    elif case == "unreachable_llm":
        extra = ["--llm-base-url", f"http://127.0.0.1:{closed_port()}/v1", "--llm-api-key", "k"]
    result, run_dir = invoke(
        tmp_path,
        "--data",
        str(data),
        "--labels",
        labels,
        "--task",
        "sentiment",
        "--hub",
        str(tiny_hub),
        *extra,
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not run_dir.exists()


def test_help_teaches_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "resume", "eval", "demo", "models", "scripts", "sandbox"):
        assert command in result.output
    run_help = runner.invoke(app, ["run", "--help"]).output
    assert "--epsilon" in run_help and "--beta" in run_help and "oracle:COLUMN" in run_help
