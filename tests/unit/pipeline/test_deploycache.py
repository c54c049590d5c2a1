"""Deploy once per model per machine: a second run copies the checked v0 from the cache."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from agent.domain import CommitteeMember
from agent.pipeline import nodes
from agent.store.runstore import RunStore, write_json
from agent.task import TaskSpec
from sandbox.local import LocalSandbox
from tests.fixtures.runs import KEYWORD_LABELS, KEYWORD_TEXTS, keyword_model


def deploy(tmp_path, name: str, source, cache) -> RunStore:
    task = TaskSpec(
        description="sentiment of short texts",
        labels=KEYWORD_LABELS,
        data_path="x.csv",
        codegen="template",
    )
    ids = [str(i) for i in range(len(KEYWORD_TEXTS))]
    rows = pd.DataFrame({"row": range(len(ids)), "id": ids, "text": KEYWORD_TEXTS})
    store = RunStore.create(tmp_path / name, task, rows)
    model = CommitteeMember(id="org/kw", slug="org__kw", source=str(source), labels=KEYWORD_LABELS)
    write_json({"models": [model.to_dict()]}, store.models_path)
    events = []
    services = nodes.Services(
        hub=None, sandbox=LocalSandbox(), reviewer=None, deploy_cache=cache, progress=events.append
    )
    nodes.write_pipeline_scripts({"run_dir": str(store.root)}, SimpleNamespace(context=services))
    assert len(events) == 1  # Deployed, either way
    return store


def files(directory) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_the_second_run_copies_the_deployed_model_and_runs_no_deploy_step(tmp_path):
    source, cache = keyword_model(tmp_path / "kw"), tmp_path / "cache"
    first = deploy(tmp_path, "first", source, cache)
    assert [p.name for p in first.steps_dir.glob("deploy-*.json")] == ["deploy-org__kw.json"]
    v0 = first.model_dir("org__kw", 0)
    assert len(list(cache.iterdir())) == 1

    second = deploy(tmp_path, "second", source, cache)
    assert not list(second.steps_dir.glob("deploy-*.json"))
    assert files(second.model_dir("org__kw", 0)) == files(v0)
    # A copy, not a link: what a run's scripts do to their model never reaches the cache.
    (second.model_dir("org__kw", 0) / "config.json").write_text("{}")
    assert files(next(cache.iterdir())) == files(v0)


def test_a_changed_model_or_deploy_script_is_deployed_again(tmp_path):
    source, cache = keyword_model(tmp_path / "kw"), tmp_path / "cache"
    deploy(tmp_path, "first", source, cache)
    (source / "extra.txt").write_text("a new file in the model's folder")
    again = deploy(tmp_path, "second", source, cache)
    assert [p.name for p in again.steps_dir.glob("deploy-*.json")] == ["deploy-org__kw.json"]
    assert len(list(cache.iterdir())) == 2
