"""Human review: the console over a finished run, and the graph's interrupt for a human."""

from __future__ import annotations

import io
import json
import shutil

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from agent.cli.app import app
from agent.cli.review import answer_interrupt, label_keys
from agent.hub.local import LocalHub
from agent.pipeline.human import Answers, hard_items
from agent.pipeline.report import read_labels
from agent.pipeline.runner import RunOptions, create_run, is_finished, run_graph
from agent.store.runstore import RunStore
from agent.task import TaskSpec
from sandbox.local import LocalSandbox
from tests.fixtures.keywords import LABELS, write_data

KEY = {label: key for key, label in label_keys(LABELS).items()}


def make_task(data, **kw) -> TaskSpec:
    base = {
        "description": "sentiment of short texts",
        "labels": LABELS,
        "data_path": str(data),
        "gold_column": "gold",
        "beta": 1000,
        "chunk_size": 10,
        "max_length": 32,
        # The reviewed templates as they are: these tests are not about who writes scripts
        # (auto's probes: tests/unit/scripts/test_codegen.py, test_codegen_kinds, test_demo).
        "codegen": "template",
    }
    return TaskSpec(**{**base, **kw})


def gold_of(store: RunStore) -> dict[str, str]:
    rows = store.rows()
    return dict(zip(rows["id"], rows["gold"], strict=True))


def options(hub_dir, on_interrupt=None) -> RunOptions:
    return RunOptions(
        hub=LocalHub(hub_dir), sandbox=LocalSandbox(), device="cpu", on_interrupt=on_interrupt
    )


@pytest.fixture(scope="module")
def finished_unreviewed(tmp_path_factory, hub_dir) -> RunStore:
    root = tmp_path_factory.mktemp("unreviewed")
    data = write_data(root / "data.csv", 20)
    store = create_run(make_task(data, reviewer="none", chunk_size=32), root / "run")
    run_graph(store, options(hub_dir), resume=False)
    assert is_finished(store)
    return store


@pytest.fixture
def unreviewed_run(finished_unreviewed, tmp_path) -> RunStore:
    """A private copy of a finished run whose hard samples nobody reviewed."""
    return RunStore(shutil.copytree(finished_unreviewed.root, tmp_path / "run"))


def test_review_command_saves_every_key_at_once_and_the_human_wins(unreviewed_run):
    store = unreviewed_run
    gold = gold_of(store)
    items = hard_items(store)
    assert len(items) >= 4 and {i.source for i in items} == {"unreviewed"}
    first, second, third = items[:3]
    wrong = next(label for label in LABELS if label != gold[first.id])
    keys = [
        KEY[wrong],  # a slip on the first sample ...
        "u",  # ... taken back: the console returns to it
        KEY[gold[first.id]],
        "s",  # the second is skipped
        "x",  # not a key: nothing happens
        KEY[gold[third.id]],
        "q",
    ]
    result = CliRunner().invoke(app, ["review", str(store.root)], input="".join(keys))
    assert result.exit_code == 0, result.output
    assert "answered 2, skipped 1; quit" in result.output
    assert "unknown key 'x'" in result.output

    hard = pd.concat(pd.read_parquet(p) for p in sorted((store.root / "hard").glob("*.parquet")))
    hard = hard.set_index("id")
    assert hard.loc[first.id, ["label", "source"]].tolist() == [gold[first.id], "human"]
    assert hard.loc[third.id, ["label", "source"]].tolist() == [gold[third.id], "human"]
    assert hard.loc[second.id, "source"] == "unreviewed"
    log = json.loads((store.root / "human" / "answers.json").read_text())["answers"]
    assert [(e["id"], e["label"]) for e in log] == [
        (first.id, gold[first.id]),
        (third.id, gold[third.id]),
    ]

    # The finished run's outputs were re-exported with the human answers in them.
    labels = pd.read_csv(store.labels_csv_path, dtype=str).set_index("aa_id")
    assert labels.loc[first.id, "aa_source"] == "human" == labels.loc[third.id, "aa_source"]
    assert labels.loc[first.id, "aa_label"] == gold[first.id]
    metrics = json.loads(store.metrics_path.read_text())
    assert metrics["by_source"]["human"] == 2

    # A second session shows only what still needs a human; --all shows every hard sample.
    remaining = [i.id for i in hard_items(store)]
    assert first.id not in remaining and second.id in remaining
    assert len(hard_items(store, everything=True)) == len(items)


def test_human_answer_replaces_the_llms_and_undo_restores_it(unreviewed_run):
    store = unreviewed_run
    item = hard_items(store)[0]
    path = store.hard_chunk(item.chunk)
    hard = pd.read_parquet(path)
    hard.loc[hard["id"] == item.id, ["label", "source"]] = ["positive", "llm"]
    hard.to_parquet(path, index=False)

    shown = next(i for i in hard_items(store, everything=True) if i.id == item.id)
    assert shown.suggestion == "positive"
    answers = Answers(store)
    answers.answer(shown, "negative")
    row = pd.read_parquet(path).set_index("id").loc[item.id]
    assert (row["label"], row["source"]) == ("negative", "human")
    # A new console (a new process) can still take it back.
    assert Answers(store).undo()["id"] == item.id
    row = pd.read_parquet(path).set_index("id").loc[item.id]
    assert (row["label"], row["source"]) == ("positive", "llm")


def test_human_reviewer_pauses_the_graph_at_review_and_resume_continues(tmp_path, hub_dir):
    data = write_data(tmp_path / "data.csv", 20)
    store = create_run(make_task(data, reviewer="human"), tmp_path / "run")
    gold = gold_of(store)
    quiet = Console(file=io.StringIO())
    payloads = []

    def answer_one_then_quit(payload):
        payloads.append(payload)
        keys = iter([KEY[gold[payload["items"][0]["id"]]], "q"])
        return answer_interrupt(store, payload, quiet, read_key=lambda: next(keys))

    run_graph(store, options(hub_dir, answer_one_then_quit), resume=False)
    assert not is_finished(store)
    assert len(payloads) == 1
    first = payloads[0]
    answered = first["items"][0]["id"]
    hard = pd.read_parquet(store.hard_chunk(first["chunk"])).set_index("id")
    assert hard.loc[answered, "source"] == "human"

    def answer_all(payload):
        payloads.append(payload)
        keys = iter(KEY[gold[i["id"]]] for i in payload["items"])
        return answer_interrupt(store, payload, quiet, read_key=lambda: next(keys))

    run_graph(store, options(hub_dir, answer_all), resume=True)
    assert is_finished(store)
    again = payloads[1]
    # The resumed graph asks again at the same chunk, without the sample already answered.
    assert again["chunk"] == first["chunk"]
    assert [i["id"] for i in again["items"]] == [i["id"] for i in first["items"][1:]]
    assert {p["chunk"] for p in payloads} == {0, 1}  # the next chunk interrupted in turn

    labels = read_labels(store)
    routed = labels[labels["source"] == "human"]
    assert len(routed) == sum(len(p["items"]) for p in payloads[1:]) + 1
    assert (routed["label"] == routed["id"].map(gold)).all()
    assert set(labels["source"]) <= {"committee", "human", "skipped"}
