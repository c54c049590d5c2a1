"""The Python API, for notebooks and pipelines: label a pandas DataFrame or a file, resume a run.

    from agent.api import label, resume

    result = label(frame, labels=["positive", "negative"], task="sentiment of tweets")
    result.labels      # the rows with every column of `frame`, then the run's aa_ columns
    result.run_dir     # everything the run wrote; resume(result.run_dir) finishes a paused one

`label` takes the same options as `autoannotator run`: the task's (any TaskSpec field: k, beta,
reviewer, chunk_size, gold_column, max_llm_calls, ...) and the engine's (hub, sandbox, device,
the LLM endpoint, step_timeout, and `engine`: local, ray or auto, with `ray_address`).
Progress goes to an optional callback of agent.domain events.
Bad input raises agent.errors.UserError with the same one-line message the CLI prints. The
command line's `run` and `resume` go through `start` and `execute` here too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from agent.domain import Event
from agent.errors import UserError
from agent.hub.demo import build_demo_hub
from agent.hub.hf import HfHub
from agent.hub.local import LocalHub
from agent.hub.protocol import ModelHub
from agent.pipeline.engine import make_engine, recorded_engine
from agent.pipeline.runner import (
    DEFAULT_LLM_CONCURRENCY,
    RunOptions,
    is_finished,
    preflight,
    run_graph,
)
from agent.store.runstore import RunStore, prepare_input, read_input, read_json, write_parquet
from agent.task import TaskSpec, parse_label_map
from sandbox.base import Sandbox
from sandbox.factory import make_sandbox

ENV_HUB = "AUTOANNOTATOR_HUB"


@dataclass(frozen=True)
class Result:
    """What a run left: `labels` is labels.parquet (None while the run is paused for people),
    `metrics` its metrics.json ({} while paused)."""

    run_dir: Path
    finished: bool
    labels: pd.DataFrame | None
    metrics: dict


def open_hub(hub: str | None, progress: Callable[[str], None] | None = None) -> ModelHub:
    """A LocalHub at PATH, `hf` for the Hugging Face Hub, or the demo catalog (built on demand);
    unset, the AUTOANNOTATOR_HUB environment variable says which."""
    hub = hub or os.environ.get(ENV_HUB) or None
    if hub == "hf":
        return HfHub()
    if hub:
        return LocalHub(Path(hub))
    return LocalHub(build_demo_hub(progress=progress))


def unconfined_by_surprise(kind: str, sandbox: Sandbox) -> bool:
    """`sandbox="auto"` found no engine and fell back to a local subprocess (sandbox.factory):
    LLM-written code must not run there unless the user asked for `local` by name."""
    return kind == "auto" and sandbox.name == "local"


def engine_options(
    *,
    run_id: str | None,
    hub: str | None = None,
    sandbox: str = "auto",
    device: str = "auto",
    llm_base_url: str | None = None,
    llm_api_key: str | None = None,
    llm_model: str | None = None,
    gguf: str | None = None,
    step_timeout: float = 3600.0,
    llm_concurrency: int = DEFAULT_LLM_CONCURRENCY,
    deploy_cache: Path | None = None,
    script_cache: Path | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    label_map_cache: Path | None = None,
    smoke_cache: Path | None = None,
    status: Callable[[str], None] | None = None,
) -> RunOptions:
    """How a run executes: the hub opened, the sandbox of run `run_id` made (its containers
    carry that id; opening it removes the ones a killed runner left behind), the engine that
    runs its annotate steps started or joined (pipeline.engine.make_engine)."""
    box = make_sandbox(sandbox, device=device, run_id=run_id)
    return RunOptions(
        engine=make_engine(engine, ray_address),
        hub=open_hub(hub, status),
        sandbox=box,
        llm_scripts_allowed=not unconfined_by_surprise(sandbox, box),
        llm_base_url=llm_base_url,
        llm_api_key=llm_api_key,
        llm_model=llm_model,
        gguf=gguf,
        device=device,
        timeout_s=step_timeout,
        llm_concurrency=llm_concurrency,
        deploy_cache=deploy_cache,
        script_cache=script_cache,
        label_map_cache=label_map_cache,
        smoke_cache=smoke_cache,
    )


def engine_for_resume(
    store: RunStore, engine: str | None, ray_address: str | None
) -> tuple[str, str | None]:
    """The engine a resume runs on: the one asked for, else the one the run recorded."""
    if engine is not None:
        return engine, ray_address
    kind, address = recorded_engine(store)
    return kind, ray_address or address


def start(
    spec: TaskSpec, run_dir: Path, make_options: Callable[[str], RunOptions]
) -> tuple[RunStore, RunOptions]:
    """Check everything the run needs, then write its directory: a refused run leaves nothing.

    The options (`make_options(run_id)`) are made only once the directory is known to be free:
    opening the sandbox under the run's id removes that id's leftover containers, which must
    never be a live run's."""
    source = read_input(spec)
    rows = prepare_input(spec, source)
    RunStore.check_free(run_dir)
    options = make_options(RunStore(run_dir).run_id)
    preflight(spec, options)
    return RunStore.create(run_dir, spec, rows, source), options


def execute(store: RunStore, options: RunOptions, *, resume: bool) -> Result:
    """Run (or continue) the graph; a run paused for human review comes back unfinished."""
    run_graph(store, options, resume=resume)
    if not is_finished(store):
        return Result(run_dir=store.root, finished=False, labels=None, metrics={})
    return Result(
        run_dir=store.root,
        finished=True,
        labels=pd.read_parquet(store.labels_path),
        metrics=read_json(store.metrics_path),
    )


def task_spec(**fields) -> TaskSpec:
    """A TaskSpec, or a UserError naming the first field that is wrong."""
    try:
        return TaskSpec(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "task"
        raise UserError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def _engine(progress: Callable[[Event], None] | None, on_interrupt, **engine) -> Callable:
    def make(run_id: str) -> RunOptions:
        options = engine_options(run_id=run_id, **engine)
        if progress is not None:
            options = replace(options, progress=progress)
        return replace(options, on_interrupt=on_interrupt)

    return make


def label(
    data: pd.DataFrame | str | Path,
    *,
    labels: Sequence[str],
    task: str,
    run_dir: str | Path | None = None,
    label_map: Sequence[str] = (),
    progress: Callable[[Event], None] | None = None,
    on_interrupt: Callable[[dict], object | None] | None = None,
    hub: str | None = None,
    sandbox: str = "auto",
    device: str = "auto",
    llm_base_url: str | None = None,
    llm_api_key: str | None = None,
    llm_model: str | None = None,
    gguf: str | None = None,
    step_timeout: float = 3600.0,
    llm_concurrency: int = DEFAULT_LLM_CONCURRENCY,
    engine: str = "local",
    ray_address: str | None = None,
    **task_fields,
) -> Result:
    """Label `data` (a DataFrame, or a CSV/TSV/JSONL/parquet path) end to end, like `run`.

    `task_fields` are TaskSpec's (text_column, gold_column, k, beta, reviewer, chunk_size,
    max_llm_calls, min_confidence, ...); `label_map` takes `--label-map`'s items. A DataFrame is
    saved beside the run directory as <run_dir>.input.parquet, the file the run reads. With
    `reviewer="human"` the run pauses at each chunk's hard samples unless `on_interrupt`
    answers them (agent.cli.review.answer_interrupt is the console's way); `resume` goes on."""
    target = Path(run_dir) if run_dir else Path("runs") / f"run-{datetime.now():%Y%m%d-%H%M%S}"
    if isinstance(data, pd.DataFrame):
        RunStore.check_free(target)
        path = target.with_name(target.name + ".input.parquet")
        write_parquet(data.rename(columns=str), path)
        data = path
    try:
        shared, per_model = parse_label_map(label_map)
    except ValueError as err:
        raise UserError(str(err)) from None
    if task_fields.get("gold_column"):
        task_fields.setdefault("gold_evidence", 1.0)  # as `run --gold-column`
    spec = task_spec(
        description=task,
        labels=list(labels),
        data_path=str(data),
        label_map=shared,
        model_label_maps=per_model,
        **task_fields,
    )
    make_options = _engine(
        progress,
        on_interrupt,
        hub=hub,
        sandbox=sandbox,
        device=device,
        llm_base_url=llm_base_url,
        llm_api_key=llm_api_key,
        llm_model=llm_model,
        gguf=gguf,
        step_timeout=step_timeout,
        llm_concurrency=llm_concurrency,
        engine=engine,
        ray_address=ray_address,
    )
    store, options = start(spec, target, make_options)
    return execute(store, options, resume=False)


def resume(
    run_dir: str | Path,
    *,
    progress: Callable[[Event], None] | None = None,
    on_interrupt: Callable[[dict], object | None] | None = None,
    hub: str | None = None,
    sandbox: str = "auto",
    device: str = "auto",
    llm_base_url: str | None = None,
    llm_api_key: str | None = None,
    llm_model: str | None = None,
    gguf: str | None = None,
    step_timeout: float = 3600.0,
    llm_concurrency: int = DEFAULT_LLM_CONCURRENCY,
    engine: str | None = None,
    ray_address: str | None = None,
) -> Result:
    """Finish a stopped or paused run: nothing finished is redone, no LLM answer paid twice.
    `engine` None: where the run last ran (its engine.json)."""
    store = RunStore(Path(run_dir))
    store.task()  # not a run directory: one line
    engine, ray_address = engine_for_resume(store, engine, ray_address)
    make_options = _engine(
        progress,
        on_interrupt,
        hub=hub,
        sandbox=sandbox,
        device=device,
        llm_base_url=llm_base_url,
        llm_api_key=llm_api_key,
        llm_model=llm_model,
        gguf=gguf,
        step_timeout=step_timeout,
        llm_concurrency=llm_concurrency,
        engine=engine,
        ray_address=ray_address,
    )
    return execute(store, make_options(store.run_id), resume=True)
