"""The options `run`, `eval`, `resume`, `chat` and `demo` share: declared once, each command
gathers them into one Engine, which becomes the core's RunOptions with the run's sandbox."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from agent import api as api_module
from agent.cli import app as app_module
from agent.cli.app import app
from agent.cli.options import (
    DEFAULT_STEP_TIMEOUT_S,
    Engine,
    Review,
    label_map_fields,
    run_options,
)
from agent.domain import ShotLayout
from agent.errors import UserError
from agent.store.runstore import RunStore
from agent.task import TaskSpec
from sandbox.local import LocalSandbox

runner = CliRunner()
LABELS = ["positive", "negative"]


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\ngood day,positive\nbad day,negative\n", encoding="utf-8")
    return path


@pytest.fixture
def engines(monkeypatch):
    """Each command's Engine and run id, caught where the command asks for its RunOptions;
    the command then stops there with a one-line error."""
    seen: list[tuple[Engine, str | None]] = []

    def fake_run_options(engine, *, run_id):
        seen.append((engine, run_id))
        raise UserError("stopped before the run")

    monkeypatch.setattr(app_module, "run_options", fake_run_options)
    return seen


def command_line(name: str, csv, tmp_path) -> list[str]:
    run_dir = str(tmp_path / name)
    if name == "run":
        return ["run", "--data", str(csv), "--labels", "positive,negative", "--task",
                "sentiment", "--run-dir", run_dir]  # fmt: skip
    if name == "eval":
        return ["eval", "--data", str(csv), "--labels", "positive,negative", "--task",
                "sentiment", "--reviewers", "oracle", "--run-dir", run_dir]  # fmt: skip
    if name == "resume":
        task = TaskSpec(description="sentiment", labels=LABELS, data_path=str(csv))
        rows = pd.DataFrame({"row": [0], "id": ["0"], "text": ["good day"]})
        RunStore.create(tmp_path / name, task, rows)
        return ["resume", run_dir]
    return ["demo", "--rows", "4", "--run-dir", run_dir]


@pytest.mark.parametrize("name", ["run", "eval", "resume", "demo"])
def test_every_command_takes_the_step_timeout_and_names_the_runs_sandbox(
    tmp_path, csv, engines, name
):
    result = runner.invoke(app, [*command_line(name, csv, tmp_path), "--step-timeout", "12.5"])

    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: stopped before the run"
    [(engine, run_id)] = engines
    assert engine.step_timeout == 12.5
    assert run_id == RunStore(tmp_path / name).run_id
    assert not (tmp_path / name / "task.json").exists() or name == "resume"


@pytest.mark.parametrize("name", ["run", "eval", "resume", "demo"])
def test_every_command_takes_the_engine(tmp_path, csv, engines, name):
    line = [*command_line(name, csv, tmp_path), "--engine", "ray", "--ray-address", "ray://h:1"]
    result = runner.invoke(app, line)

    assert result.exit_code == 2, result.output
    [(engine, _)] = engines
    assert (engine.engine, engine.ray_address) == ("ray", "ray://h:1")


def test_an_unknown_engine_is_one_line(tmp_path, csv, engines):
    result = runner.invoke(app, [*command_line("run", csv, tmp_path), "--engine", "spark"])

    assert result.exit_code == 2
    assert "--engine takes local, ray or auto, not 'spark'" in result.output
    assert engines == []


def test_resume_without_an_engine_runs_where_the_run_ran(tmp_path, csv, engines):
    line = command_line("resume", csv, tmp_path)
    (tmp_path / "resume" / "engine.json").write_text('{"engine": "ray", "address": "ray://h:1"}')

    runner.invoke(app, line)
    runner.invoke(app, [*line, "--engine", "local"])

    [(recorded, _), (asked, _)] = engines
    assert (recorded.engine, recorded.ray_address) == ("ray", "ray://h:1")
    assert asked.engine == "local"


@pytest.mark.parametrize("name", ["run", "demo"])
def test_an_existing_run_directory_is_refused_before_its_sandbox_is_opened(
    tmp_path, csv, engines, name
):
    """Opening a sandbox under a run id removes that id's containers: never a live run's."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "task.json").write_text("{}", encoding="utf-8")

    result = runner.invoke(app, command_line(name, csv, tmp_path))

    assert result.exit_code == 2, result.output
    assert "run directory already exists" in result.output
    assert engines == []


@pytest.mark.parametrize("name", ["eval", "demo"])
def test_the_step_timeout_defaults_to_an_hour(tmp_path, csv, engines, name):
    runner.invoke(app, command_line(name, csv, tmp_path))
    [(engine, _)] = engines
    assert engine.step_timeout == DEFAULT_STEP_TIMEOUT_S == 3600.0


def test_the_engine_becomes_the_run_options_with_the_runs_sandbox(tmp_path, tiny_hub, monkeypatch):
    made = {}

    def fake_make_sandbox(kind, device, run_id):
        made.update(kind=kind, device=device, run_id=run_id)
        return LocalSandbox()

    monkeypatch.setattr(api_module, "make_sandbox", fake_make_sandbox)
    engine = Engine(
        hub=str(tiny_hub),
        sandbox="local",
        device="cpu",
        llm_base_url="http://llm.example/v1",
        llm_api_key="key",
        llm_model="m",
        gguf="model.gguf",
        step_timeout=12.5,
        quiet=True,
    )

    options = run_options(engine, run_id="run-1234")

    assert made == {"kind": "local", "device": "cpu", "run_id": "run-1234"}
    assert isinstance(options.sandbox, LocalSandbox) and options.llm_scripts_allowed
    assert options.hub.root == tiny_hub
    assert (options.timeout_s, options.device) == (12.5, "cpu")
    assert (options.llm_base_url, options.llm_api_key, options.llm_model, options.gguf) == (
        "http://llm.example/v1",
        "key",
        "m",
        "model.gguf",
    )


def test_the_review_options_become_task_fields():
    review = Review(
        batch="8",
        shots=2,
        shot_layout=ShotLayout.NEAREST,
        probabilities=False,
        debias=False,
        self_check=0.6,
        batch_api=True,
        max_calls=5,
        label_desc=("positive=a good day",),
        label_words=("positive=good,negative=bad",),
    )
    assert review.task_fields() == {
        "review_batch": 8,
        "review_shots": 2,
        "review_shot_layout": "nearest",
        "review_probabilities": False,
        "review_debias": False,
        "review_self_check": 0.6,
        "review_batch_api": True,
        "max_llm_calls": 5,
        "max_cost_usd": None,
        "price_in": None,
        "price_out": None,
        "label_descriptions": {"positive": "a good day"},
        "draft_label_descriptions": True,
        "label_words": {"positive": "good", "negative": "bad"},
        "audit_share": 0.05,
        "routing": "uncertainty",
        "min_confidence": None,
    }
    assert Review().task_fields()["review_batch"] == "auto"
    assert Review().task_fields()["review_shots"] == 16
    assert Review(draft_desc=False).task_fields()["draft_label_descriptions"] is False
    assert Review().task_fields()["review_debias"] is True
    assert Review().task_fields()["review_self_check"] is None
    assert Review().task_fields()["review_batch_api"] is False


def test_the_run_id_is_known_before_the_run_and_differs_between_folders(tmp_path):
    before = RunStore(tmp_path / "a" / "run").run_id
    task = TaskSpec(description="sentiment", labels=LABELS, data_path="x.csv")
    rows = pd.DataFrame({"row": [0], "id": ["0"], "text": ["good day"]})
    store = RunStore.create(tmp_path / "a" / "run", task, rows)
    assert store.run_id == before and before.startswith("run-")
    assert RunStore(tmp_path / "b" / "run").run_id != before


@pytest.mark.parametrize("name", ["run", "eval", "resume", "chat", "demo"])
def test_help_teaches_the_shared_options_in_groups(name):
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "--step-timeout" in text and "Seconds one sandboxed script" in text
    assert "--sandbox" in text and "docker, local" in text
    assert "Models, sandbox and device" in text
    if name != "demo":
        assert "--device" in text and "cpu or cuda" in text
        assert "LLM endpoint" in text and "--llm-base-url" in text
    if name in ("run", "eval", "chat"):
        assert "--label-map" in text and "negative=bearish" in text
    if name in ("run", "eval"):
        assert "LLM review" in text and "--review-batch" in text and "--label-words" in text
        assert "--review-shots" in text and "--no-draft-label-desc" in text
        assert "Pipeline" in text and "--replay-ratio" in text and "--codegen" in text


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--sandbox", "vm", "--sandbox takes docker, local or auto, not 'vm'"),
        ("--device", "tpu", "--device takes auto, cpu or cuda, not 'tpu'"),
        ("--codegen", "human", "--codegen takes auto, llm or template, not 'human'"),
    ],
)
def test_an_unknown_choice_is_one_line_exit_2(tmp_path, csv, flag, value, expected):
    result = runner.invoke(app, [*command_line("run", csv, tmp_path), flag, value])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {expected}"
    assert not (tmp_path / "run").exists()


@pytest.fixture
def specs(monkeypatch):
    """The TaskSpec `run` builds, caught before anything is created."""
    seen: list[TaskSpec] = []

    def fake_create(spec, run_dir, engine):
        seen.append(spec)
        raise UserError("stopped before the run")

    monkeypatch.setattr(app_module, "_create", fake_create)
    return seen


def test_gold_column_makes_the_users_labels_evidence_and_trust_options_reach_the_task(
    tmp_path, csv, specs
):
    args = command_line("run", csv, tmp_path)
    result = runner.invoke(
        app,
        [*args, "--gold-column", "label", "--audit-share", "0.1", "--min-confidence", "0.8",
         "--routing", "gain"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    (spec,) = specs
    assert (spec.gold_column, spec.gold_evidence) == ("label", 1.0)
    assert (spec.audit_share, spec.min_confidence, spec.routing) == (0.1, 0.8, "gain")
    runner.invoke(app, command_line("run", csv, tmp_path / "plain"))
    assert (specs[1].gold_column, specs[1].gold_evidence, specs[1].audit_share) == (None, 0.0, 0.05)
    assert specs[1].routing == "uncertainty"
    wrong = runner.invoke(app, [*command_line("run", csv, tmp_path / "x"), "--routing", "vibes"])
    assert wrong.exit_code == 2 and "vibes" in wrong.output


def test_the_label_map_becomes_task_fields():
    assert label_map_fields(["negative=bearish,positive=bullish", "org/m:LABEL_0=bearish"]) == {
        "label_map": {"negative": "bearish", "positive": "bullish"},
        "model_label_maps": {"org/m": {"LABEL_0": "bearish"}},
    }
    assert label_map_fields(None) == {"label_map": {}, "model_label_maps": {}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("negative", "--label-map takes MODEL_LABEL=TASK_LABEL or MODEL_ID:MODEL_LABEL=TASK_LABEL"),
        (
            "negative=bearish",
            "task: --label-map negative=bearish: 'bearish' is not one of the labels",
        ),
    ],
)
def test_a_bad_label_map_is_one_line_exit_2(tmp_path, csv, value, expected):
    result = runner.invoke(app, [*command_line("run", csv, tmp_path), "--label-map", value])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {expected}") and result.output.count("\n") == 1
    assert not (tmp_path / "run").exists()
