"""The Ray engine: an annotate step cut into shards run as Ray tasks gives the votes one local
step gives; a node killed mid-shard loses no row and labels none twice; choosing the engine."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter

import pandas as pd
import pytest

from agent.domain import CommitteeMember
from agent.errors import UserError
from agent.pipeline.annotate import LocalEngine, annotate_chunk
from agent.pipeline.engine import make_engine, record_engine, recorded_engine
from agent.pipeline.ray_engine import RAY_MISSING, RayEngine
from agent.scripts.codegen import write_scripts
from agent.store.runstore import RunStore
from agent.task import TaskSpec
from sandbox.base import Limits
from sandbox.local import LocalSandbox
from tests.fixtures.ray import HoldingSandbox
from tests.fixtures.runs import KEYWORD_LABELS, KEYWORD_TEXTS, keyword_model

TEXTS = KEYWORD_TEXTS * 3  # 21 rows
SLUGS = ("org__kw", "org__kw2")


def make_run(tmp_path, name: str) -> tuple[RunStore, list[CommitteeMember]]:
    """A run of TEXTS in one chunk, two keyword models deployed as v0."""
    task = TaskSpec(
        description="sentiment of short texts",
        labels=KEYWORD_LABELS,
        data_path="x.csv",
        chunk_size=len(TEXTS),
        max_length=16,
    )
    rows = pd.DataFrame(
        {"row": range(len(TEXTS)), "id": [f"r{i}" for i in range(len(TEXTS))], "text": TEXTS}
    )
    store = RunStore.create(tmp_path / name, task, rows)
    models = [CommitteeMember(id=s, slug=s, source="", labels=KEYWORD_LABELS) for s in SLUGS]
    write_scripts(store, task, models, ["annotate"])
    source = tmp_path / "kw"
    if not source.is_dir():
        keyword_model(source)
    for model in models:
        shutil.copytree(source, store.model_dir(model.slug, 0))
    return store, models


def label(store, models, engine, sandbox=None) -> None:
    annotate_chunk(
        store,
        sandbox or LocalSandbox(),
        models,
        {m.slug: 0 for m in models},
        0,
        "cpu",
        Limits(threads=1, timeout_s=300),
        engine=engine,
    )


def votes(store: RunStore, slug: str) -> pd.DataFrame:
    return pd.read_parquet(store.model_votes(slug, 0))


def test_shards_on_ray_give_the_votes_of_one_local_step(tmp_path, ray_instance):
    local, models = make_run(tmp_path, "local")
    label(local, models, LocalEngine())
    sharded, _ = make_run(tmp_path, "ray")
    label(sharded, models, RayEngine(shard_rows=5))  # 5+5+5+5+1 rows

    for slug in SLUGS:
        expected, got = votes(local, slug), votes(sharded, slug)
        assert got["id"].tolist() == expected["id"].tolist() == [f"r{i}" for i in range(21)]
        assert got["label"].tolist() == expected["label"].tolist()
        pd.testing.assert_series_equal(got["score"], expected["score"], atol=1e-6)
    # One step per shard and model, each under its own name; the shards are gone once kept.
    steps = list(sharded.steps_dir.glob("annotate-*.json"))
    assert len(steps) == 5 * len(SLUGS)
    assert not sharded.shards_dir(0, 5).parent.exists()


def test_a_node_killed_mid_shard_loses_no_row_and_labels_none_twice(tmp_path, ray_cluster):
    store, models = make_run(tmp_path, "run")
    signals = tmp_path / "signals"
    signals.mkdir()
    sandbox = HoldingSandbox(signals)
    doomed = ray_cluster.add_node(num_cpus=1)
    engine = RayEngine(shard_rows=7)  # 3 shards per model
    errors = []

    def annotate() -> None:
        try:
            label(store, models, engine, sandbox)
        except Exception as err:  # reported to the test's thread below
            errors.append(err)

    driver = threading.Thread(target=annotate)
    driver.start()
    deadline = time.monotonic() + 120
    while not sandbox.started() and time.monotonic() < deadline:
        time.sleep(0.2)
    held = sandbox.started()
    assert held, "no shard started on the first node"
    ray_cluster.add_node(num_cpus=1)
    ray_cluster.remove_node(doomed, allow_graceful=False)  # the shard it runs dies with it
    (signals / "release").touch()
    driver.join(timeout=300)
    assert not driver.is_alive() and not errors

    # The shard the dead node held ran again elsewhere; every other shard ran at least once.
    attempts = Counter(sandbox.started())
    assert attempts[held[0]] >= 2
    assert set(attempts) == {f"input-{i:05d}.parquet" for i in range(3)}
    for slug in SLUGS:
        got = votes(store, slug)
        assert got["id"].tolist() == [f"r{i}" for i in range(21)]  # each row once, in order
        ahead = pd.read_parquet(store.ahead_votes(slug, 0, 0))
        assert ahead["id"].is_unique and len(ahead) == 21


def test_a_shard_kept_before_the_driver_died_is_not_labeled_again(tmp_path, ray_instance):
    store, models = make_run(tmp_path, "run")
    engine = RayEngine(shard_rows=7)
    label(store, models[:1], engine)
    first = store.ahead_votes(SLUGS[0], 0, 0)
    # What a driver killed after one shard left: the cut, and that shard's checked votes.
    directory = store.shards_dir(0, 7)
    directory.mkdir(parents=True)
    rows = pd.read_parquet(store.ahead_input(0))
    kept = pd.read_parquet(first).iloc[:7].assign(label="positive")  # marks it as not redone
    rows.iloc[:7].to_parquet(directory / "input-00000.parquet")
    kept.to_parquet(directory / f"{SLUGS[1]}-v0-00000.parquet")
    (directory / f"{SLUGS[1]}-v0-00000.json").write_text('{"precision": "fp32"}')

    label(store, models, engine)
    resumed = votes(store, SLUGS[1])
    assert (resumed["label"].iloc[:7] == "positive").all()
    assert resumed["label"].iloc[7:].tolist() == votes(store, SLUGS[0])["label"].iloc[7:].tolist()
    steps = [p.stem for p in store.steps_dir.glob(f"annotate-{SLUGS[1]}-*.json")]
    assert len(steps) == 2  # shards 1 and 2 only


def test_auto_is_ray_only_with_an_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert isinstance(make_engine("auto"), LocalEngine)
    assert isinstance(make_engine("local"), LocalEngine)
    with pytest.raises(UserError, match="--engine takes"):
        make_engine("spark")


def test_ray_without_the_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UserError) as err:
        make_engine("ray")
    assert str(err.value) == RAY_MISSING
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(UserError):
        make_engine("auto")


def test_the_run_records_its_engine_for_resume(tmp_path, ray_instance):
    store, _ = make_run(tmp_path, "run")
    assert recorded_engine(store) == ("local", None)
    record_engine(store, RayEngine(address=None))
    assert recorded_engine(store) == ("ray", None)


def test_the_core_imports_nothing_from_ray():
    """Ray stays optional: the command line and the API load without it."""
    check = "import sys, agent.cli.app, agent.api; print('ray' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "False"
