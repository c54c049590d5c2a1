"""Load once, label many: one annotate step per model version and window of rows, not per chunk;
resume never relabels a finished row and keeps every checked step's votes."""

from __future__ import annotations

import json
import shutil
import threading

import pandas as pd
import pytest

from agent.domain import CommitteeMember
from agent.pipeline import annotate
from agent.pipeline.annotate import annotate_chunk
from agent.scripts.codegen import write_scripts
from agent.scripts.contract import annotate_args, read_precision, validate_votes
from agent.store.runstore import RunStore, read_json
from agent.task import TaskSpec
from sandbox.base import Limits
from sandbox.local import LocalSandbox
from tests.fixtures.runs import KEYWORD_LABELS, KEYWORD_TEXTS, keyword_model

TEXTS = KEYWORD_TEXTS * 3  # 21 rows
PROBE_ROWS = 200  # templates/annotate.py.j2
EXPECTED = {"good": "positive", "love": "positive", "bad": "negative", "hate": "negative"}


def expected_label(text: str) -> str:
    return next((label for word, label in EXPECTED.items() if word in text), "neutral")


@pytest.fixture
def run(tmp_path):
    """A run of TEXTS cut into 5-row chunks, one keyword model deployed as v0 and v1."""
    task = TaskSpec(
        description="sentiment of short texts",
        labels=KEYWORD_LABELS,
        data_path="x.csv",
        chunk_size=5,
        max_length=16,
    )
    ids = [f"r{i}" for i in range(len(TEXTS))]
    rows = pd.DataFrame({"row": range(len(ids)), "id": ids, "text": TEXTS})
    store = RunStore.create(tmp_path / "run", task, rows)
    model = CommitteeMember(id="org/kw", slug="org__kw", source="", labels=KEYWORD_LABELS)
    write_scripts(store, task, [model], ["annotate"])
    source = keyword_model(tmp_path / "kw")
    for version in (0, 1):
        shutil.copytree(source, store.model_dir(model.slug, version))
    for chunk in range(1, 5):
        store.cut_chunk(chunk, 5)  # 5+5+5+5+1 rows
    return store, model


def label(store: RunStore, model: CommitteeMember, chunk: int, version: int) -> None:
    annotate_chunk(
        store, LocalSandbox(), [model], {model.slug: version}, chunk, "cpu", Limits(threads=1)
    )


def annotate_steps(store: RunStore) -> list[str]:
    return sorted(p.stem for p in store.steps_dir.glob("annotate-*.json"))


def step_rows(store: RunStore, name: str) -> list[str]:
    """The ids an annotate step was given (its --input file)."""
    args = json.loads((store.steps_dir / f"{name}.json").read_text())
    chunk = int(name.rsplit("-", 1)[1])
    assert args["exit_code"] == 0
    return pd.read_parquet(store.ahead_input(chunk))["id"].tolist()


def chunk_votes(store: RunStore, model: CommitteeMember, chunk: int) -> pd.DataFrame:
    return pd.read_parquet(store.model_votes(model.slug, chunk))


def test_one_step_per_version_labels_every_chunk_it_serves(run, monkeypatch):
    store, model = run
    monkeypatch.setattr(annotate, "LOOKAHEAD_ROWS", 12)
    for chunk in range(3):
        label(store, model, chunk, 0)
    # Chunk 0's step labeled rows 0-11 (chunks 0, 1 and two rows of 2): chunk 2 needed another.
    assert annotate_steps(store) == ["annotate-org__kw-v0-000000", "annotate-org__kw-v0-000002"]
    assert step_rows(store, "annotate-org__kw-v0-000000") == [f"r{i}" for i in range(12)]
    assert step_rows(store, "annotate-org__kw-v0-000002") == [f"r{i}" for i in range(10, 21)]
    # A fine-tuned version labels only what no finished chunk holds: rows 15 on.
    for chunk in (3, 4):
        label(store, model, chunk, 1)
    assert annotate_steps(store)[-1] == "annotate-org__kw-v1-000003"
    assert step_rows(store, "annotate-org__kw-v1-000003") == [f"r{i}" for i in range(15, 21)]
    assert len(annotate_steps(store)) == 3

    for chunk in range(5):
        votes = chunk_votes(store, model, chunk)
        rows = pd.read_parquet(store.input_chunk(chunk))
        assert votes["id"].tolist() == rows["id"].tolist()
        assert votes["label"].tolist() == [expected_label(t) for t in rows["text"]]
        assert votes["score"].between(0, 1).all()


def test_resume_reuses_checked_votes_and_never_relabels_a_finished_chunk(run):
    store, model = run
    label(store, model, 0, 0)
    first = chunk_votes(store, model, 0)
    # A run killed after the step's votes were checked but before chunk 1's file was written.
    label(store, model, 1, 0)
    store.model_votes(model.slug, 1).unlink()
    finished = store.model_votes(model.slug, 0).stat().st_mtime_ns
    label(store, model, 0, 0)
    label(store, model, 1, 0)
    assert annotate_steps(store) == ["annotate-org__kw-v0-000000"]
    assert store.model_votes(model.slug, 0).stat().st_mtime_ns == finished
    pd.testing.assert_frame_equal(chunk_votes(store, model, 0), first)
    assert chunk_votes(store, model, 1)["id"].tolist() == [f"r{i}" for i in range(5, 10)]


def test_a_step_that_leaves_votes_for_too_few_rows_writes_nothing(run, tmp_path):
    """The host checks a step's votes against every row it was given, not only the chunk's."""
    store, model = run
    script = store.script_path("annotate", model.slug)
    source = script.read_text()
    script.write_text(
        source.replace(
            '"score": scores, "probs": dists})',
            '"score": scores, "probs": dists}).head(5)',
        )
    )
    assert script.read_text() != source
    with pytest.raises(Exception, match="5 rows for 21 inputs"):
        label(store, model, 0, 0)
    assert not store.model_votes(model.slug, 0).exists()
    assert not store.ahead_votes_files(model.slug, 0)


def run_template(store: RunStore, model: CommitteeMember, rows: pd.DataFrame, *extra: str):
    """The annotate template on `rows` with extra arguments: (votes, precision.json's record)."""
    inputs = store.root / "probe-input.parquet"
    rows.to_parquet(inputs, index=False)
    out = store.root / f"out{'-'.join(extra)}"
    out.mkdir()
    model_dir = store.model_dir(model.slug, 0)
    args = annotate_args(model_dir, inputs, out / "votes.parquet", store.task(), "cpu", 1)
    result = LocalSandbox().run(
        store.script_path("annotate", model.slug),
        [*args, *extra],
        inputs=[model_dir, inputs],
        output_dir=out,
        limits=Limits(threads=1),
    )
    assert result.ok, result.stderr_tail
    return validate_votes(out / "votes.parquet", rows, model.labels), read_precision(out)


def test_auto_precision_keeps_int8_only_within_half_a_point_of_fp32_on_the_probe(run):
    store, model = run
    texts = [f"{t} {w}" for t in KEYWORD_TEXTS for w in ("day", "night", "show")] * 12
    rows = pd.DataFrame({"id": [f"p{i}" for i in range(len(texts))], "text": texts})
    assert len(rows) > PROBE_ROWS
    fp32, fp32_record = run_template(store, model, rows, "--precision", "fp32")
    auto, record = run_template(store, model, rows)
    assert fp32_record == {"precision": "fp32"}
    assert record["probe_rows"] == PROBE_ROWS
    # The probe rows keep fp32's answers; the rule decides what labels the rest.
    probe = slice(0, PROBE_ROWS)
    assert auto["label"][probe].tolist() == fp32["label"][probe].tolist()
    assert auto["score"][probe].tolist() == pytest.approx(fp32["score"][probe].tolist())
    assert (record["precision"] == "int8") == (record["probe_changed"] <= 0.005)
    if record["precision"] == "fp32":
        assert auto["label"].tolist() == fp32["label"].tolist()


def test_the_template_reports_every_labels_probability(run):
    store, model = run
    rows = pd.DataFrame({"id": [f"p{i}" for i in range(len(TEXTS))], "text": TEXTS})
    votes, _ = run_template(store, model, rows, "--precision", "fp32")
    for row in votes.itertuples():
        assert set(row.probs) == set(model.labels)
        assert sum(row.probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert max(row.probs, key=row.probs.get) == row.label
        assert row.probs[row.label] == pytest.approx(row.score)


def test_bf16_labels_like_fp32_on_cpu(run):
    """The reduced precision CUDA gets, tested on the CPU through --precision."""
    store, model = run
    rows = pd.DataFrame({"id": [f"p{i}" for i in range(len(TEXTS))], "text": TEXTS})
    fp32, _ = run_template(store, model, rows, "--precision", "fp32")
    bf16, record = run_template(store, model, rows, "--precision", "bf16")
    assert record == {"precision": "bf16"}
    assert bf16["label"].tolist() == fp32["label"].tolist()
    assert bf16["score"].tolist() == pytest.approx(fp32["score"].tolist(), abs=0.02)


def test_a_step_records_its_precision_and_only_a_valid_report(run, tmp_path):
    store, model = run
    label(store, model, 0, 0)
    record = read_json(store.ahead_votes(model.slug, 0, 0).with_suffix(".json"))
    assert record == {"precision": "fp32", "reason": "too few rows to probe"}
    for bad in ('{"precision": "int4"}', "not json", '{"precision": "fp32", "probe_rows": -1}'):
        (tmp_path / "precision.json").write_text(bad)
        assert read_precision(tmp_path) == {"precision": "unreported"}
    (tmp_path / "precision.json").unlink()
    (tmp_path / "precision.json").symlink_to(store.task_path)
    assert read_precision(tmp_path) == {"precision": "unreported"}


def test_a_step_labels_only_the_rows_before_the_next_fine_tune(run):
    store, model = run
    # The versions in use are expected to be replaced after 7 rows: chunk 0 (5) and 2 of chunk 1,
    # and a quarter more in case the estimate falls short (LOOKAHEAD_SLACK): 9 rows.
    annotate_chunk(
        store, LocalSandbox(), [model], {model.slug: 0}, 0, "cpu", Limits(threads=1), window=7
    )
    assert step_rows(store, "annotate-org__kw-v0-000000") == [f"r{i}" for i in range(9)]
    # A window smaller than the chunk still labels the whole chunk.
    annotate_chunk(
        store, LocalSandbox(), [model], {model.slug: 1}, 2, "cpu", Limits(threads=1), window=1
    )
    assert step_rows(store, "annotate-org__kw-v1-000002") == [f"r{i}" for i in range(10, 15)]


class WaitingStep:
    """A step whose run waits until `parties` steps are running at once (a step-shaped double:
    run_steps only calls run)."""

    def __init__(self, name: str, barrier: threading.Barrier) -> None:
        self.name = name
        self.barrier = barrier

    def run(self, sandbox: object) -> None:
        self.barrier.wait()


def test_the_local_engine_runs_fine_tune_steps_side_by_side_with_a_share_of_the_threads():
    engine = annotate.LocalEngine()
    # Run one after another, the first step would wait alone and the barrier would break.
    barrier = threading.Barrier(3, timeout=10)
    steps = [WaitingStep(f"finetune-{n}", barrier) for n in range(3)]
    finished: list[str] = []
    engine.run_steps(LocalSandbox(), steps, lambda step: finished.append(step.name))  # type: ignore[arg-type]
    assert finished == ["finetune-0", "finetune-1", "finetune-2"]
    assert engine.step_threads(Limits(threads=2), 3) == 1
    assert engine.step_threads(Limits(threads=8), 3) == 2
    assert engine.step_threads(Limits(threads=4), 1) == 4
    assert engine.step_threads(Limits(threads=0), 3) == 0  # the library's default stays
