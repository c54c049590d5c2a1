"""A run started before CommitteeMember existed resumes: its models.json (the committee as plain
dicts) and its checkpointed state read as they are, and are written back in the same shape."""

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from agent.domain import Aligned, CommitteeMember, Selected, Source
from agent.pipeline import nodes
from agent.pipeline.review import Verdict
from agent.store.runstore import RunStore, prepare_input, write_json, write_parquet
from agent.task import TaskSpec
from tests.fixtures.runs import make_store


def old_entry(name: str, labels: list[str], escalation: float | None) -> dict:
    """A `models` entry as selection's Candidate.to_json wrote it, key for key."""
    return {
        "id": f"org/{name}",
        "slug": f"org__{name}",
        "source": f"/hub/org/{name}",
        "labels": labels,
        "similarity": 0.5,
        "label_map": dict(zip(labels, ["neg", "pos"], strict=True)),
        "label_evidence": {label: "synonym" for label in labels},
        "rejected": None,
        "license": "mit",
        "size_bytes": 1000,
        "base_model": None,
        "datasets": [],
        "score": 0.4,
        "score_parts": {"similarity": 0.5},
        "many_to_one": {},
        "downloads": 7,
        "chosen": True,
        "note": None,
        "smoke": None,
        "expected_escalation": escalation,
    }


def runtime(events: list) -> SimpleNamespace:
    services = nodes.Services(hub=None, sandbox=None, reviewer=None, progress=events.append)
    return SimpleNamespace(context=services)


def test_an_old_runs_committee_is_read_aligned_and_voted_with(tmp_path):
    store = make_store(tmp_path, n=4, chunk_size=4, beta=100)
    old = [old_entry("a", ["NEG", "POS"], 0.25), old_entry("b", ["LABEL_0", "LABEL_1"], 0.25)]
    considered = [*old, {**old_entry("c", ["x", "y"], None), "rejected": "too big"}]
    write_json({"hub": "local", "models": old, "considered": considered}, store.models_path)
    # The state an old checkpoint holds: paths and counters, the committee is not in it.
    state = {"run_dir": str(store.root), "versions": {"org__a": 0, "org__b": 2}, "next_chunk": 0}
    events = []

    assert nodes.select_models(state, runtime(events)) == {"versions": state["versions"]}
    assert nodes.align_labels(state, runtime(events)) == {}
    selected, aligned = events
    # An old run did not record selection's time; what it considered it did.
    assert selected == Selected(
        models=["org/a", "org/b"], expected_escalation=0.25, considered=3, seconds=None
    )
    assert aligned == Aligned(
        maps={m["id"]: m["label_map"] for m in old},
        evidence={m["id"]: m["label_evidence"] for m in old},
    )

    saved = json.loads(store.models_path.read_text())
    inverse = [{"neg": "NEG", "pos": "POS"}, {"neg": "LABEL_0", "pos": "LABEL_1"}]
    assert saved["models"] == [
        {**entry, "inverse_label_map": inv} for entry, inv in zip(old, inverse, strict=True)
    ]
    assert saved["considered"] == considered and saved["hub"] == "local"
    assert store.committee() == [
        CommitteeMember.from_dict({**e, "inverse_label_map": i})
        for e, i in zip(old, inverse, strict=True)
    ]

    ids = pd.read_parquet(store.input_chunk(0))["id"]
    for slug, raw in [("org__a", ["NEG", "POS", "POS", "NEG"]), ("org__b", ["LABEL_0"] * 4)]:
        votes = pd.DataFrame({"id": ids, "label": raw, "score": 0.9})
        write_parquet(votes, store.model_votes(slug, 0))
    assert nodes.vote_and_route(state, runtime(events)) == {"escalated": 2}
    voted = pd.read_parquet(store.chunk_votes(0))
    assert voted["org__b.label"].tolist() == ["neg"] * 4
    assert json.loads(voted["versions"][0]) == {"org__a": 0, "org__b": 2}


@pytest.mark.parametrize(("evidence", "expected"), [(1.0, ["pos", None, "pos"]), (0.0, None)])
def test_selection_gets_the_gold_labels_of_the_first_chunks_rows(
    tmp_path, monkeypatch, evidence, expected
):
    """Only gold the run may learn from: an eval's or the demo's scoring gold stays unseen."""
    (tmp_path / "d.csv").write_text("text,gold\ngood,pos\n,neg\nbad,\nfine,pos\n")
    task = TaskSpec(
        description="sentiment",
        labels=["neg", "pos"],
        data_path=str(tmp_path / "d.csv"),
        gold_column="gold",
        gold_evidence=evidence,
        chunk_size=10,
    )
    store = RunStore.create(tmp_path / "run", task, prepare_input(task))
    seen = {}

    def fake_select(hub, task, texts, *, gold, propose, teacher, ids, policy):
        seen.update(texts=texts, gold=gold, ids=ids, smoke_cache=policy.smoke_cache)
        # The run's reviewer teaches label maps: asked about these rows, it answers as it would.
        seen["taught"] = teacher([(ids[0], texts[0])]) if teacher else None
        raise RuntimeError("stop here")

    class Reviewer:
        name = "oracle"

        def review(self, items):
            return [Verdict(item.id, f"{item.id}:{item.text}", Source.ORACLE) for item in items]

    monkeypatch.setattr(nodes, "select", fake_select)
    services = runtime([])
    services.context.reviewer = Reviewer()
    services.context.smoke_cache = tmp_path / "smoke"
    with pytest.raises(RuntimeError, match="stop here"):
        nodes.select_models({"run_dir": str(store.root)}, services)
    # The blank row is not in the chunk; a row without gold has None.
    ids = pd.read_parquet(store.input_chunk(0))["id"].tolist()
    assert seen == {
        "texts": ["good", "bad", "fine"],
        "gold": expected,
        "ids": ids,
        "taught": [f"{ids[0]}:good"],
        "smoke_cache": tmp_path / "smoke",  # the run's smoke-test cache reaches selection
    }
