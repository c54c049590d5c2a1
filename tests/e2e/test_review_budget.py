"""The LLM budget in a whole run: past --max-llm-calls the committee's label stays, the report
lists those samples, and none of them trains an SLM."""

from __future__ import annotations

import json

import pandas as pd

from agent.domain import ReviewEstimated
from agent.pipeline.hardpool import expert_samples
from agent.pipeline.report import read_labels
from agent.pipeline.runner import create_run, run_graph
from agent.task import TaskSpec
from tests.fixtures.keywords import LABELS, write_data


def test_past_the_call_cap_hard_samples_keep_the_committee_label(
    tmp_path, fake_openai, llm_options
):
    data = write_data(tmp_path / "data.csv", 24)
    task = TaskSpec(
        description="sentiment of short texts",
        labels=LABELS,
        data_path=str(data),
        gold_column="gold",
        beta=1000,
        chunk_size=12,
        max_length=32,
        review_batch=2,
        max_llm_calls=2,
        codegen="template",  # the budget is what this test is about, not the scripts
    )
    store = create_run(task, tmp_path / "run")
    events = []
    run_graph(store, llm_options(progress=events.append), resume=False)

    # The two review calls the cap allows, and the one that drafted the labels' meanings.
    assert sum(fake_openai.requests.values()) == 3
    labels = read_labels(store)
    reviewed = labels[labels["source"] == "llm"]
    capped = labels[labels["source"] == "committee-capped"]
    assert len(reviewed) == 4 and len(capped) > 0
    votes = pd.concat(pd.read_parquet(store.chunk_votes(c)) for c in range(store.n_chunks()))
    committee = votes.set_index("id")["label"]
    assert (capped["label"] == capped["id"].map(committee)).all()

    listed = pd.read_csv(store.capped_path, dtype={"id": str})
    assert listed["id"].tolist() == capped["id"].tolist()
    metrics = json.loads(store.metrics_path.read_text())
    assert metrics["committee_capped"] == {"count": len(capped), "file": store.capped_path.name}
    report = store.report_path.read_text()
    assert f"{len(capped)} hard samples came after --max-llm-calls" in report
    assert store.capped_path.name in report

    pool = expert_samples(store, list(range(store.n_chunks())))
    assert set(pool["id"]) == set(reviewed["id"])

    [estimate] = [event.estimate for event in events if isinstance(event, ReviewEstimated)]
    assert estimate.batch_size == 2 and estimate.affordable == 4
