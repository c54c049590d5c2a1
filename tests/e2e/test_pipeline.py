"""The whole graph on tiny models: every row labeled once, routing, review, fine-tuning, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from agent.domain import OUTPUT_COLUMNS, FinetuneStarted, Reported
from agent.hub.local import LocalHub
from agent.pipeline.report import read_labels
from agent.pipeline.runner import RunOptions, create_run, run_graph
from agent.store.runstore import RunStore
from agent.task import TaskSpec
from sandbox.local import LocalSandbox
from tests.fixtures.keywords import LABELS, WORDS, write_data
from tests.fixtures.llm import FakeOpenAI


def make_task(data: Path, **kw) -> TaskSpec:
    base = {
        "description": "sentiment of short texts",
        "labels": LABELS,
        "data_path": str(data),
        "gold_column": "gold",
        "beta": 8,
        "chunk_size": 16,
        "max_length": 32,
        # The reviewed templates as they are: these tests are not about who writes scripts
        # (auto's probes: tests/unit/scripts/test_codegen.py, test_codegen_kinds, test_demo).
        "codegen": "template",
    }
    return TaskSpec(**{**base, **kw})


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def any_sandbox(request):
    if request.param == "local":
        return LocalSandbox()
    return request.getfixturevalue("docker_sandbox")


def test_oracle_run_labels_every_row_once_and_fine_tunes(tmp_path, hub_dir, any_sandbox):
    data = write_data(tmp_path / "data.csv", 40)
    store = create_run(make_task(data, reviewer="oracle:gold"), tmp_path / "run")
    events = []
    options = RunOptions(
        hub=LocalHub(hub_dir),
        sandbox=any_sandbox,
        device="cpu",
        progress=events.append,
    )
    state = run_graph(store, options, resume=False)

    labels = read_labels(store)
    gold = pd.read_csv(data, keep_default_na=False)["gold"]
    # The user's columns come back first, exactly as given; the run's follow, prefixed.
    table = pd.read_csv(store.labels_csv_path, dtype=str, keep_default_na=False)
    given = pd.read_csv(data, dtype=str, keep_default_na=False)
    assert table[list(given.columns)].equals(given)
    assert list(table.columns[2:]) == [f"aa_{c}" for c in OUTPUT_COLUMNS]
    assert labels["id"].tolist() == [str(i) for i in range(40)]
    assert labels.loc[3, "source"] == "skipped" and pd.isna(labels.loc[3, "label"])
    routed = labels[labels["source"] == "oracle"]
    assert not routed.empty
    # The oracle's answers are the gold labels, and they win over the committee's vote.
    assert (routed["label"] == gold[routed.index]).all()
    committee = labels[labels["source"] == "committee"]
    assert (committee["uncertainty"] < 1 / 3).all()
    assert set(labels["source"]) <= {"committee", "oracle", "skipped"}

    chunks = pd.concat(pd.read_parquet(store.chunk_votes(c)) for c in range(store.n_chunks()))
    assert len(chunks) == 39 and chunks["id"].is_unique
    assert ((chunks["uncertainty"] >= 1 / 3 - 1e-9) == (chunks["route"] == "review")).all()

    metrics = json.loads(store.metrics_path.read_text())
    assert metrics["rows"] == 40 and metrics["by_source"]["skipped"] == 1
    assert metrics["escalated"] == len(routed)
    cycles = metrics["finetune_cycles"]
    assert state["cycles"] == len(cycles) >= 1
    for slug, outcome in cycles[0]["models"].items():
        assert (store.model_dir(slug, 1) / "gate.json").is_file()
        assert outcome["version"] == (1 if outcome["kept"] else 0)
        assert outcome["peak_memory_mb"] > 0 and outcome["train_seconds"] > 0
    for cycle in cycles:
        assert cycle["pool_rows"] >= 8
        assert cycle["gate_rows"] + cycle["hard_train_rows"] == cycle["pool_rows"]
        # The default replay ratio 1.0: one unanimous committee row per hard training row, as
        # far as the chunks labeled so far have them.
        seen = chunks[chunks["chunk"] <= max(cycle["chunks"])]
        unanimous = int((seen["uncertainty"] == 0).sum())
        assert cycle["replay_rows"] == min(cycle["hard_train_rows"], unanimous) > 0
        cycle_dir = store.root / "finetune" / f"cycle-{cycle['cycle']:03d}"
        for slug in cycle["models"]:
            train = pd.read_parquet(cycle_dir / f"{slug}.train.parquet")
            assert len(train) == cycle["train_rows"]
            assert cycle["train_rows"] == cycle["hard_train_rows"] + cycle["replay_rows"]
    # Chunks after the first are sized from the escalation seen, so later cycles start near β
    # (8) rather than a whole 16-row chunk of hard samples past it.
    assert all(c["pool_rows"] <= 8 + 4 for c in cycles[1:])
    report = store.report_path.read_text()
    assert "![escalation per chunk](plots/escalation.png)" in report
    assert "![gate accuracy per cycle](plots/gate.png)" in report
    for plot in ("escalation", "gate"):
        assert (store.root / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    kinds = {type(event) for event in events}
    assert FinetuneStarted in kinds and Reported in kinds
    assert store.report_path.read_text().startswith("# AutoAnnotator report")
    assert (store.root / "labels.csv").is_file()
    steps = [json.loads(p.read_text()) for p in (store.root / "steps").glob("*.json")]
    assert steps and {s["sandbox"] for s in steps} == {any_sandbox.name}


def test_llm_reviewer_labels_routed_samples_through_the_endpoint(
    tmp_path, fake_openai, llm_options
):
    data = write_data(tmp_path / "data.csv", 20)
    store = create_run(make_task(data, chunk_size=32, beta=1000), tmp_path / "run")
    run_graph(store, llm_options(), resume=False)
    labels = read_labels(store)
    routed = labels[labels["source"] == "llm"]
    # A remote endpoint reviews 20 samples per call (--review-batch auto), after one call that
    # drafted what the labels mean (no --label-desc), saved in task.json.
    requests = fake_openai.requests
    assert len(routed) > 1 and sum(requests.values()) == 1 + math.ceil(len(routed) / 20)
    assert max(requests.values()) == 1
    gold = pd.read_csv(data, keep_default_na=False)["gold"]
    assert (routed["label"] == gold[routed.index]).all()
    ledger = [json.loads(line) for line in store.ledger_path.read_text().splitlines()]
    assert len(ledger) == sum(requests.values()) and all(e["tokens_in"] == 40 for e in ledger)
    assert ledger[0]["purpose"] == "label-descriptions"
    task = store.task()
    assert task.label_descriptions_drafted
    assert task.label_descriptions == {label: f"a text that is {label}" for label in LABELS}
    assert all("What the labels mean:" in prompt for prompt in list(requests)[1:])


def _cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli.app", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_kill_minus_9_then_resume_redoes_nothing_and_pays_nothing_twice(tmp_path, hub_dir):
    data = write_data(tmp_path / "data.csv", 48, blanks=())
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with FakeOpenAI(LABELS, WORDS) as fake:
        common = [
            "--hub",
            str(hub_dir),
            "--sandbox",
            "local",
            "--device",
            "cpu",
            "--llm-base-url",
            fake.base_url,
            "--llm-api-key",
            "test",
            "--llm-model",
            "fake",
            "--quiet",
        ]
        proc = _cli(
            "run",
            "--data",
            str(data),
            "--labels",
            ",".join(LABELS),
            "--task",
            "sentiment of short texts",
            "--chunk-size",
            "16",
            "--beta",
            "1000",
            "--run-dir",
            str(run_dir),
            *common,
            env=env,
        )
        store = RunStore(run_dir)
        deadline = time.monotonic() + 240
        while not store.hard_chunk(0).is_file():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the run never finished its first chunk"
            # Later chunks' votes are ready ahead and the fake answers at once: look often, so
            # the kill lands while chunks are still left to review.
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not store.labels_path.exists()
        first_chunk = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*000000.parquet")}
        first_steps = {
            p: p.stat().st_mtime_ns
            for p in (run_dir / "steps").glob("annotate-*")
            if p.name.endswith("000000.json")
        }
        paid_before = sum(fake.requests.values())

        resumed = _cli("resume", str(run_dir), *common, env=env)
        output = resumed.communicate(timeout=300)[0].decode()
        assert resumed.returncode == 0, output

    assert first_chunk and all(p.stat().st_mtime_ns == t for p, t in first_chunk.items())
    assert first_steps and all(p.stat().st_mtime_ns == t for p, t in first_steps.items())
    assert max(fake.requests.values()) == 1, "an LLM answer was paid for twice"
    assert sum(fake.requests.values()) > paid_before
    labels = read_labels(store)
    assert labels["id"].tolist() == [str(i) for i in range(48)]
    assert labels["label"].notna().all()


def test_gold_rows_are_kept_and_unsure_rows_go_to_needs_review(tmp_path, llm_options):
    data = write_data(tmp_path / "data.csv", 40)
    task = make_task(data, chunk_size=64, beta=1000, gold_evidence=0.5, min_confidence=0.9)
    store = create_run(task, tmp_path / "run")
    run_graph(store, llm_options(), resume=False)
    labels = read_labels(store)
    unsure = pd.read_csv(store.needs_review_path, keep_default_na=False)
    unsure = unsure.rename(columns=lambda name: name.removeprefix("aa_"))
    gold = pd.read_csv(data, keep_default_na=False)["gold"]
    evidence = store.gold_evidence()
    # Every row once, in one file or the other; the unsure ones are below the threshold.
    assert sorted(labels["id"].tolist() + unsure["id"].astype(str).tolist()) == sorted(
        store.rows()["id"].tolist()
    )
    assert (unsure["confidence"] < 0.9).all() and (labels["confidence"].dropna() >= 0.9).all()
    kept = labels[labels["source"] == "gold"]
    assert set(kept["id"]) == set(evidence.index) - {"3"}  # row 3 is blank: skipped
    assert (kept["label"] == evidence.loc[kept["id"]].to_numpy()).all()
    hard = pd.read_parquet(store.hard_chunk(0))
    assert not hard["id"].isin(evidence.index).any()  # a gold row is never routed to review
    reliability = json.loads(store.reliability_path.read_text())
    assert reliability["known_rows"] == len(evidence) - int("3" in evidence.index)
    labeled = labels[labels["source"] != "skipped"]
    assert (labeled["label"].to_numpy() == gold[labeled["id"].astype(int)].to_numpy()).mean() >= 0.9
    # Every source's recall per label is in the report, one row a source.
    report = store.report_path.read_text()
    table = report.split("Recall per label", 1)[1]
    for name in reliability["sources"]:
        assert f"| {name} | " in table
