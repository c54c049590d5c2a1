import json

import pytest
from pydantic import ValidationError

from agent.task import TaskSpec, format_label_map, parse_label_map


def spec(**kw):
    base = {"description": "sentiment of tweets", "labels": ["a", "b"], "data_path": "x.csv"}
    return TaskSpec(**{**base, **kw})


def test_default_epsilon_is_one_over_k():
    assert spec(k=3).routing_threshold == pytest.approx(1 / 3)
    assert spec(k=3, epsilon=0.5).routing_threshold == 0.5


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["only"], "at least 2 labels"),
        (["a", "b", "a"], "duplicate labels: a"),
        ([" ", "b"], "label 1 of 2 is empty"),
    ],
)
def test_bad_label_sets_are_explained(labels, message):
    with pytest.raises(ValidationError, match=message):
        spec(labels=labels)


def test_reviewer_forms():
    assert spec(reviewer="oracle:gold").oracle_column == "gold"
    assert spec(reviewer="llm").oracle_column is None
    with pytest.raises(ValidationError, match="unknown reviewer"):
        spec(reviewer="oracle:")


def test_round_trip(tmp_path):
    original = spec(label_descriptions={"a": "the first"}, beta=10)
    original.save(tmp_path / "task.json")
    assert TaskSpec.load(tmp_path / "task.json") == original


def test_a_task_json_that_still_has_device_loads(tmp_path):
    """TaskSpec.device is gone (no run read it; --device is an option of each command); a
    task.json written before still loads, and saving it again drops the field."""
    path = tmp_path / "task.json"
    old = {**spec(beta=10).model_dump(mode="json"), "device": "cuda"}
    path.write_text(json.dumps(old), encoding="utf-8")

    loaded = TaskSpec.load(path)

    assert loaded == spec(beta=10)
    assert not hasattr(loaded, "device")
    loaded.save(path)
    assert "device" not in json.loads(path.read_text(encoding="utf-8"))


def test_the_label_map_parses_shared_and_per_model_items():
    shared, per_model = parse_label_map(["negative=bearish, positive=bullish", "org/m:LABEL_0=a"])
    assert shared == {"negative": "bearish", "positive": "bullish"}
    assert per_model == {"org/m": {"LABEL_0": "a"}}
    for bad in ("negative", "=bearish", "negative=", ":LABEL_0=a"):
        with pytest.raises(ValueError, match="--label-map takes MODEL_LABEL=TASK_LABEL"):
            parse_label_map([bad])


def test_the_label_map_targets_task_labels_and_the_per_model_map_wins():
    task = spec(label_map={"NEG": "a", "POS": "b"}, model_label_maps={"org/m": {"POS": "a"}})
    assert task.label_map_for("org/m") == {"NEG": "a", "POS": "a"}
    assert task.label_map_for("org/other") == {"NEG": "a", "POS": "b"}
    assert format_label_map(task) == "NEG=a,POS=b,org/m:POS=a"
    with pytest.raises(
        ValidationError, match=r"--label-map NEG=c: 'c' is not one of the labels \(a, b\)"
    ):
        spec(label_map={"NEG": "c"})
    with pytest.raises(ValidationError, match="--label-map org/m:NEG=c"):
        spec(model_label_maps={"org/m": {"NEG": "c"}})
