"""A whole run with `--engine ray` on a local Ray instance (annotate shards and fine-tunes as Ray
tasks) labels exactly as `--engine local`."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from agent.hub.local import LocalHub
from agent.pipeline.engine import recorded_engine
from agent.pipeline.ray_engine import RayEngine
from agent.pipeline.report import read_labels
from agent.pipeline.runner import RunOptions, create_run, run_graph
from agent.store.runstore import read_json
from agent.task import TaskSpec
from sandbox.local import LocalSandbox
from tests.fixtures.keywords import LABELS, write_data


def test_a_ray_run_labels_as_a_local_run(tmp_path, hub_dir, ray_instance):
    data = write_data(tmp_path / "data.csv", 40)
    task = TaskSpec(
        description="sentiment of short texts",
        labels=LABELS,
        data_path=str(data),
        gold_column="gold",
        reviewer="oracle:gold",
        beta=8,
        chunk_size=16,
        max_length=32,
        codegen="template",
    )
    labels = {}
    for name, engine in (("local", None), ("ray", RayEngine(shard_rows=7))):
        store = create_run(task, tmp_path / name)
        options = RunOptions(hub=LocalHub(hub_dir), sandbox=LocalSandbox(), device="cpu")
        if engine is not None:
            options = replace(options, engine=engine)
        run_graph(store, options, resume=False)
        labels[name] = read_labels(store)
        assert recorded_engine(store) == (name, None)
        # The SLMs were fine-tuned too: on Ray, each as its own task.
        assert read_json(store.metrics_path)["finetune_cycles"]
    local, ray = labels["local"], labels["ray"]
    assert ray["id"].tolist() == local["id"].tolist() == [str(i) for i in range(40)]
    # Same votes, same routing, same reviewed rows, same fine-tunes: the same labels.
    for column in ("label", "source"):
        pd.testing.assert_series_equal(ray[column], local[column])
    assert (ray["source"] == "oracle").any()
