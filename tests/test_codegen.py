import ast
import json

import pandas as pd
import pytest

from agent.annotate import StepFailed, validate_votes
from agent.codegen import ROLES, render, write_scripts
from agent.runstore import RunStore
from agent.task import TaskSpec

TASK = TaskSpec(
    description='sentiment """quoted"""',
    labels=["neg", "pos"],
    data_path="x.csv",
    batch_size=7,
    max_length=33,
    finetune_epochs=2,
)


@pytest.mark.parametrize("role", ROLES)
def test_templates_render_to_python_with_the_task_defaults(role):
    code = render(role, "org/model", TASK)
    tree = ast.parse(code)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    assert "org/model" in code
    if role == "annotate":
        assert "default=7" in code and "default=33" in code
        assert "inference_mode" in code and "half()" in code
    if role == "finetune":
        assert "default=2e-05" in code and "default=0.01" in code and "default=2)" in code


def test_write_scripts_is_idempotent_and_recorded(tmp_path):
    store = RunStore(tmp_path)
    models = [{"id": "org/a", "slug": "org__a"}, {"id": "org/b", "slug": "org__b"}]
    manifest = write_scripts(store, TASK, models)
    assert len(manifest["scripts"]) == 6
    assert {s["origin"] for s in manifest["scripts"]} == {"template"}
    script = tmp_path / "scripts" / "annotate" / "org__a.py"
    script.write_text("# edited\n")
    write_scripts(store, TASK, models)
    assert script.read_text() == "# edited\n"
    saved = json.loads((tmp_path / "scripts" / "manifest.json").read_text())
    assert len(saved["scripts"]) == 6


def test_vote_contract_checks(tmp_path):
    chunk = pd.DataFrame({"id": ["1", "2"], "text": ["a", "b"]})
    good = tmp_path / "good.parquet"
    pd.DataFrame({"id": ["2", "1"], "label": ["pos", "neg"], "score": [0.9, 0.6]}).to_parquet(good)
    assert len(validate_votes(good, chunk, ["neg", "pos"])) == 2
    cases = {
        "missing_row": pd.DataFrame({"id": ["1"], "label": ["pos"], "score": [0.9]}),
        "bad_label": pd.DataFrame({"id": ["1", "2"], "label": ["pos", "meh"], "score": [0.9, 0.5]}),
        "bad_score": pd.DataFrame({"id": ["1", "2"], "label": ["pos", "neg"], "score": [1.5, 0.5]}),
        "columns": pd.DataFrame({"id": ["1", "2"], "prediction": ["pos", "neg"]}),
    }
    for name, frame in cases.items():
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path)
        with pytest.raises(StepFailed, match="breaks the contract"):
            validate_votes(path, chunk, ["neg", "pos"])
