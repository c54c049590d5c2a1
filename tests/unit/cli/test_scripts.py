import pandas as pd
import pytest
from typer.testing import CliRunner

from agent.cli import scripts as scripts_cli
from agent.cli.app import app
from agent.errors import UserError
from agent.pipeline.runner import resolve_device
from agent.store.runstore import RunStore, write_json
from agent.task import TaskSpec
from sandbox.local import LocalSandbox

LABELS = ["negative", "neutral", "positive"]
runner = CliRunner()


def scripts(*args):
    return runner.invoke(app, ["scripts", *map(str, args)], env={"COLUMNS": "200"})


def test_list_show_attempt_and_diff(scripted_run_dir):
    listing = scripts(scripted_run_dir)
    assert listing.exit_code == 0, listing.output
    assert "passed-first-try" in listing.output and "rendered" in listing.output

    shown = scripts(scripted_run_dir, "show", "deploy", "--model", "org/kw")
    assert shown.exit_code == 0 and "written by the LLM" in shown.output
    attempt = scripts(scripted_run_dir, "show", "deploy", "--attempt", "1")
    assert attempt.exit_code == 0 and "written by the LLM" in attempt.output
    diff = scripts(scripted_run_dir, "show", "deploy", "--diff")
    assert diff.exit_code == 0 and "+# written by the LLM" in diff.output
    assert (
        "identical to templates/annotate.py.j2"
        in scripts(scripted_run_dir, "show", "annotate", "--diff").output
    )

    assert scripts(scripted_run_dir, "show", "deploy", "--attempt", "9").exit_code == 2
    assert scripts(scripted_run_dir, "show", "deploy", "--model", "nobody").exit_code == 2


def test_rerun_annotates_chunk_zero_into_a_scratch_dir(scripted_run_dir):
    result = scripts(scripted_run_dir, "rerun", "annotate", "--sandbox", "local")
    assert result.exit_code == 0, result.output
    assert "5 rows of chunk 0" in result.output and "contract kept" in result.output
    votes = pd.read_parquet(
        scripted_run_dir / "scratch" / "rerun-annotate-org__kw" / "out" / "votes.parquet"
    )
    assert votes.set_index("id").loc[["0", "1", "2"], "label"].tolist() == [
        "positive",
        "negative",
        "neutral",
    ]


def test_rerun_deploys_and_finetunes_with_the_candidate_checks(scripted_run_dir):
    deployed = scripts(scripted_run_dir, "rerun", "deploy", "--sandbox", "local")
    assert deployed.exit_code == 0, deployed.output
    assert f"labels {LABELS}" in deployed.output
    tuned = scripts(scripted_run_dir, "rerun", "finetune", "--sandbox", "local")
    assert tuned.exit_code == 0, tuned.output
    assert "probe accuracy" in tuned.output and "(as the script reports them)" in tuned.output


@pytest.fixture
def bare_run(tmp_path):
    """A run directory with one template annotate script in its manifest; nothing ran."""
    task = TaskSpec(description="sentiment of short texts", labels=LABELS, data_path="x.csv")
    rows = pd.DataFrame({"row": [0], "id": ["0"], "text": ["good day"]})
    store = RunStore.create(tmp_path / "run", task, rows)
    entry = {"role": "annotate", "model": "org/kw", "slug": "org__kw", "origin": "template",
             "status": "rendered", "path": "scripts/annotate/org__kw.py"}  # fmt: skip
    write_json({"scripts": [entry]}, store.scripts_manifest_path)
    return store.root


@pytest.mark.parametrize(("flags", "expected"), [([], None), (["--device", "cpu"], "cpu")])
def test_rerun_resolves_its_device_as_a_run_does(bare_run, monkeypatch, flags, expected):
    """`--device` defaults to auto, as everywhere else, and reaches the script resolved."""
    seen = {}

    def fake_rerun(store, entry, box, device):
        seen["device"] = device
        raise UserError("stopped before running")

    monkeypatch.setattr(scripts_cli, "rerun", fake_rerun)

    result = scripts(bare_run, "rerun", "annotate", "--sandbox", "local", *flags)

    assert result.exit_code == 2 and "stopped before running" in result.output, result.output
    assert seen["device"] == (expected or resolve_device("auto", LocalSandbox()))
    assert seen["device"] in ("cpu", "cuda")


def test_rerun_help_says_device_auto(bare_run):
    result = runner.invoke(
        app, ["scripts", str(bare_run), "rerun", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "--device" in line)
    assert "[default: auto]" in line
