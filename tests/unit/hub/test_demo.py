"""The demo catalog builder, on a tiny slice (the full build takes minutes, see the slow mark)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from agent.hub import demo as demo_hub
from agent.hub.demo import (
    DEMO_MODELS,
    SAMPLES,
    TASK_LABELS,
    build_demo_hub,
    committee_metrics,
    default_demo_hub_dir,
    demo_input,
)
from agent.hub.local import LocalHub
from agent.hub.protocol import split_front_matter

ONE_MODEL = "demo/minilm-sentiment-movie-reviews"


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory):
    dest = tmp_path_factory.mktemp("catalog") / "demo-hub"
    messages: list[str] = []
    build_demo_hub(dest, models=[ONE_MODEL], rows=40, progress=messages.append)
    return dest, messages


def test_small_build_is_a_loadable_local_hub(small_catalog):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    dest, messages = small_catalog
    info = LocalHub(dest).model_info(ONE_MODEL)
    assert info.labels == TASK_LABELS["sentiment"]
    assert info.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert info.pipeline_tag == "text-classification"
    assert info.datasets == ["sst5", "tweeteval_sentiment"]
    assert info.downloads and info.downloads > 0
    model = AutoModelForSequenceClassification.from_pretrained(info.source)
    tokenizer = AutoTokenizer.from_pretrained(info.source)
    assert model(**tokenizer(["what a day"], return_tensors="pt")).logits.shape == (1, 3)
    assert any("training" in m for m in messages)


def test_card_and_manifest_record_measured_numbers(small_catalog):
    dest, _ = small_catalog
    meta, body = split_front_matter(
        (dest / "demo__minilm-sentiment-movie-reviews" / "README.md").read_text()
    )
    assert meta["license"] and meta["downloads"]
    assert "Held-out" in body and "tweets_sentiment_demo.csv" in body
    assert "synthetic" in body
    manifest = json.loads((dest / "manifest.json").read_text())
    result = manifest["models"][ONE_MODEL]
    assert result["demo_rows"] == 40
    assert 0 <= result["demo_accuracy"] <= 1
    assert 0 <= result["held_out_accuracy"] <= 1
    assert manifest["build"]["models"] == [ONE_MODEL]
    assert manifest["committees"] == {}  # one member is no committee


def test_build_leaves_no_staging_dirs_and_reuses_a_finished_catalog(small_catalog):
    dest, _ = small_catalog
    assert sorted(p.name for p in dest.parent.iterdir()) == ["demo-hub"]
    stamp = (dest / "manifest.json").stat().st_mtime_ns
    build_demo_hub(dest, models=[ONE_MODEL], rows=40)
    assert (dest / "manifest.json").stat().st_mtime_ns == stamp


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(demo_hub, "_train", crash)
    dest = tmp_path / "demo-hub"
    with pytest.raises(RuntimeError, match="boom"):
        build_demo_hub(dest, models=[ONE_MODEL], rows=10)
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown demo models"):
        build_demo_hub(tmp_path / "hub", models=["demo/nope"])


def test_env_var_overrides_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOANNOTATOR_DEMO_HUB", str(tmp_path / "elsewhere"))
    assert default_demo_hub_dir() == tmp_path / "elsewhere"


def test_committee_metrics_route_any_disagreement():
    votes = [["a", "a", "b", "a"], ["a", "a", "b", "b"], ["a", "b", "b", "b"]]
    gold = ["a", "a", "a", "b"]
    metrics = committee_metrics(votes, gold)
    assert metrics["escalated_pct"] == 50.0  # rows 1 and 3 disagree
    assert metrics["unanimous_accuracy"] == 0.5  # row 0 right, row 2 wrong
    assert metrics["majority_accuracy"] == 0.75


@pytest.mark.parametrize("task", ["sentiment", "toxicity"])
def test_demo_inputs_have_gold_labels_and_were_never_trained_on(task):
    demo = pd.read_csv(demo_input(task), keep_default_na=False)
    assert set(demo["label"]) == set(TASK_LABELS[task])
    assert len(demo) >= 500
    normalise = lambda s: " ".join(str(s).lower().split())  # noqa: E731
    demo_texts = set(demo["text"].map(normalise))
    for spec in DEMO_MODELS:
        for draw in spec.draws:
            sample = pd.read_csv(demo_hub.DEMO_DATA / f"{draw.sample}.csv", keep_default_na=False)
            assert demo_texts.isdisjoint(sample["text"].map(normalise)), draw.sample


def test_every_bundled_sample_is_documented_and_fully_mapped():
    readme = (demo_hub.DEMO_DATA / "README.md").read_text()
    for name, sample in SAMPLES.items():
        frame = pd.read_csv(demo_hub.DEMO_DATA / f"{name}.csv", keep_default_na=False)
        assert set(frame["label"]) <= set(sample.label_map), name
        assert f"{name}.csv" in readme
    for task in TASK_LABELS:
        assert demo_input(task).name in readme


def test_demo_input_rejects_unknown_task():
    with pytest.raises(ValueError):
        demo_input("emotion")
