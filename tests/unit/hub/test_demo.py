"""The demo catalog builder, on a tiny slice (the full build takes minutes, see the slow mark)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from agent.domain import ModelKind
from agent.hub import demo as demo_hub
from agent.hub.demo import (
    DEMO_MODELS,
    SAMPLES,
    TASK_LABELS,
    build_demo_hub,
    committee_metrics,
    default_demo_hub_dir,
    demo_input,
    reload_votes,
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


NEW_KINDS = {
    "demo/minilm-toxic-comments-multilabel": "multi-label",
    "demo/minilm-embedding-toxicity-comments": "embedding-head",
}


@pytest.fixture(scope="module")
def new_kinds_catalog(tmp_path_factory):
    dest = tmp_path_factory.mktemp("kinds") / "demo-hub"
    build_demo_hub(dest, models=list(NEW_KINDS), rows=40)
    return dest


def test_the_new_kinds_are_listed_with_their_decision_labels_and_how_to_use_them(
    new_kinds_catalog,
):
    hub = LocalHub(new_kinds_catalog)
    assert {m.id: (m.kind, m.labels) for m in hub.list_models()} == {
        model_id: (kind, TASK_LABELS["toxicity"]) for model_id, kind in NEW_KINDS.items()
    }
    multi = new_kinds_catalog / "demo__minilm-toxic-comments-multilabel"
    config = json.loads((multi / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert list(config["id2label"].values()) == ["toxic", "offensive", "hate"]
    meta, body = split_front_matter((multi / "README.md").read_text())
    assert meta["decision_labels"] == ["non-toxic", "toxic"]
    assert "## How to use" in body and "**sigmoid**" in body
    head = new_kinds_catalog / "demo__minilm-embedding-toxicity-comments"
    assert "id2label" not in json.loads((head / "config.json").read_text())
    assert json.loads((head / "config_setfit.json").read_text())["labels"] == ["non-toxic", "toxic"]
    assert (head / "model_head.safetensors").is_file() and (head / "1_Pooling").is_dir()
    meta, body = split_front_matter((head / "README.md").read_text())
    assert "**mean pooling**" in body and meta["library_name"] == "sentence-transformers"


def test_the_annotate_template_fails_the_new_kinds_probe_saying_why(new_kinds_catalog, tmp_path):
    import shutil

    from agent.domain import CommitteeMember
    from agent.errors import Rejected
    from agent.scripts.codegen import VERIFIERS
    from agent.store.runstore import RunStore
    from agent.task import TaskSpec
    from sandbox.base import Limits
    from sandbox.local import LocalSandbox

    texts = ["you are a stupid idiot", "thanks, have a nice day", "go to hell", "the rain stopped"]
    rows = pd.DataFrame({"row": range(4), "id": [str(i) for i in range(4)], "text": texts})
    task = TaskSpec(description="toxic comments", labels=TASK_LABELS["toxicity"], data_path="x")
    store = RunStore.create(tmp_path / "run", task, rows)
    hub = LocalHub(new_kinds_catalog)
    expected = {"multi-label": "independent sigmoids", "embedding-head": "no id2label"}
    # The multi-label heads' names are not the labels; the encoder has no classifier, so the
    # template's class makes one up, which transformers reports.
    failure = {
        "multi-label": ("contract", "labels outside the model's"),
        "embedding-head": ("weights", "newly initialized"),
    }
    for model_id, kind in NEW_KINDS.items():
        info = hub.model_info(model_id)
        member = CommitteeMember(model_id, model_id.replace("/", "__"), info.source, info.labels,
                                 record={"kind": kind})  # fmt: skip
        shutil.copytree(info.source, store.model_dir(member.slug, 0))
        probe = VERIFIERS["annotate"](
            store, task, [member], LocalSandbox(), "cpu", Limits(timeout_s=300, threads=1)
        )
        with pytest.raises(Rejected) as caught:
            probe.template(member)
        stage, reason = failure[kind]
        assert caught.value.stage == stage and reason in caught.value.reason
        assert f"cannot run a model of kind {kind}: " in caught.value.reason
        assert expected[kind] in caught.value.reason


@pytest.mark.parametrize("model_id", list(NEW_KINDS))
def test_the_new_kinds_cards_show_code_that_labels_as_the_model_does(new_kinds_catalog, model_id):
    """The card's usage snippet is what an LLM adapts into a script for the model, so it must
    be right: run on the folder, it gives the labels the build checked against training."""
    folder = new_kinds_catalog / model_id.replace("/", "__")
    _, body = split_front_matter((folder / "README.md").read_text())
    (snippet,) = re.findall(r"```python\n(.*?)```", body, re.S)
    assert f'"{model_id}"' in snippet  # named as on a hub; run here on the local folder
    ran = subprocess.run(
        [sys.executable, "-c", snippet.replace(f'"{model_id}"', repr(str(folder)))],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    lines = [line.split("\t") for line in ran.stdout.splitlines()]
    texts = [text for _, _, text in lines]
    assert len(texts) == 2
    assert all(0.5 <= float(score) <= 1 for _, score, _ in lines)
    kind = ModelKind(NEW_KINDS[model_id])
    assert [label for label, _, _ in lines] == reload_votes(folder, texts, kind)
