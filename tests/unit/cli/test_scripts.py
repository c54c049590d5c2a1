import shutil

import pandas as pd
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from typer.testing import CliRunner

from agent.cli.app import app
from agent.domain import CommitteeMember
from agent.llm.client import LLMClient
from agent.scripts.codegen import generate_scripts, render, write_scripts
from agent.store.runstore import RunStore, write_json
from agent.task import TaskSpec
from sandbox.base import Limits
from sandbox.local import LocalSandbox
from tests.fixtures.models import make_keyword_classifier

LABELS = ["negative", "neutral", "positive"]
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run whose deploy script the (fake) LLM wrote and whose other scripts are templates."""
    tmp_path = tmp_path_factory.mktemp("scripts-cli")
    source = make_keyword_classifier(
        tmp_path / "kw", LABELS, {"negative": ["bad"], "positive": ["good"]}, "neutral"
    )
    task = TaskSpec(description="sentiment of short texts", labels=LABELS, data_path="x.csv")
    texts = ["good day", "bad movie", "the news", "good good", "so bad"]
    rows = pd.DataFrame({"row": range(5), "id": [str(i) for i in range(5)], "text": texts})
    store = RunStore.create(tmp_path / "run", task, rows)
    models = [CommitteeMember("org/kw", "org__kw", str(source), LABELS)]
    write_json({"models": [m.to_dict() for m in models]}, store.models_path)
    shutil.copytree(source, store.model_dir("org__kw", 0))
    answer = f"```python\n# written by the LLM\n{render('deploy', 'org/kw', task)}```"
    llm = LLMClient(
        FakeListChatModel(responses=[answer]),
        model="fake",
        cache_path=tmp_path / "cache.sqlite",
        ledger_path=tmp_path / "ledger.jsonl",
    )
    generate_scripts(
        store, task, models, ["deploy"], llm, LocalSandbox(), device="cpu", limits=Limits()
    )
    write_scripts(store, task, models, ["annotate", "finetune"])
    return store.root


def scripts(*args):
    return runner.invoke(app, ["scripts", *map(str, args)], env={"COLUMNS": "200"})


def test_list_show_attempt_and_diff(run_dir):
    listing = scripts(run_dir)
    assert listing.exit_code == 0, listing.output
    assert "passed-first-try" in listing.output and "rendered" in listing.output

    shown = scripts(run_dir, "show", "deploy", "--model", "org/kw")
    assert shown.exit_code == 0 and "written by the LLM" in shown.output
    attempt = scripts(run_dir, "show", "deploy", "--attempt", "1")
    assert attempt.exit_code == 0 and "written by the LLM" in attempt.output
    diff = scripts(run_dir, "show", "deploy", "--diff")
    assert diff.exit_code == 0 and "+# written by the LLM" in diff.output
    assert "identical to the template" in scripts(run_dir, "show", "annotate", "--diff").output

    assert scripts(run_dir, "show", "deploy", "--attempt", "9").exit_code == 2
    assert scripts(run_dir, "show", "deploy", "--model", "nobody").exit_code == 2


def test_rerun_annotates_chunk_zero_into_a_scratch_dir(run_dir):
    result = scripts(run_dir, "rerun", "annotate", "--sandbox", "local")
    assert result.exit_code == 0, result.output
    assert "5 rows of chunk 0" in result.output and "contract kept" in result.output
    votes = pd.read_parquet(
        run_dir / "scratch" / "rerun-annotate-org__kw" / "out" / "votes.parquet"
    )
    assert votes.set_index("id").loc[["0", "1", "2"], "label"].tolist() == [
        "positive",
        "negative",
        "neutral",
    ]


def test_rerun_deploys_and_finetunes_with_the_candidate_checks(run_dir):
    deployed = scripts(run_dir, "rerun", "deploy", "--sandbox", "local")
    assert deployed.exit_code == 0, deployed.output
    assert f"labels {LABELS}" in deployed.output
    tuned = scripts(run_dir, "rerun", "finetune", "--sandbox", "local")
    assert tuned.exit_code == 0, tuned.output
    assert "probe accuracy" in tuned.output and "(as the script reports them)" in tuned.output
