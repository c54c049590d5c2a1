"""Start, resume and drive a run: the graph, its SQLite checkpointer, and the live services."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from agent.domain import Event, LabelsDescribed, Progress, ReviewEstimated, Selected
from agent.hub.protocol import ModelHub
from agent.llm.client import LLMClient
from agent.llm.endpoint import Endpoint, check_endpoint, make_chat_model, resolve_endpoint
from agent.llm.local_server import LocalServer, open_endpoint, resolve_gguf
from agent.llm.pricing import Budget, Price, price_table
from agent.pipeline import review
from agent.pipeline.annotate import Engine, LocalEngine
from agent.pipeline.chunking import max_chunks
from agent.pipeline.engine import record_engine
from agent.pipeline.graph import build_graph
from agent.pipeline.nodes import Services
from agent.pipeline.review import LLMReviewer, estimate_review
from agent.store.runstore import (
    InputError,
    RunStore,
    prepare_input,
    read_input,
    read_json,
    write_json,
)
from agent.task import TaskSpec
from sandbox.base import Limits, Sandbox

log = logging.getLogger(__name__)

CODEGEN_TIMEOUT_S = 1200.0
# Well inside the request-per-minute limits of a hosted API's lowest paid tier; a 429 past
# them is retried with backoff by the openai client (make_chat_model's max_retries).
DEFAULT_LLM_CONCURRENCY = 8


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what): these may differ between a run and its resume. Frozen: a
    caller that needs other options makes a copy (dataclasses.replace)."""

    hub: ModelHub
    sandbox: Sandbox
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str | None = None
    gguf: str | None = None
    endpoint: Endpoint | None = None  # already open (the chat's), used as is
    device: str = "auto"
    timeout_s: float = 3600.0
    vote_cache: Path | None = None  # share v0 votes with other runs on the same rows
    deploy_cache: Path | None = None  # deploy each model once per machine (deploycache)
    # LLM-written scripts that passed, reused per model kind (agent.scripts.scriptcache)
    script_cache: Path | None = None
    label_map_cache: Path | None = None  # LLM label-map proposals kept between runs
    smoke_cache: Path | None = None  # smoke-test answers kept between runs (selection)
    # Review requests in flight at once on a remote endpoint (a local server takes one).
    llm_concurrency: int = DEFAULT_LLM_CONCURRENCY
    # Who runs the annotate steps: this process, or a Ray cluster (pipeline.engine).
    engine: Engine = field(default_factory=LocalEngine)
    progress: Progress = field(default=lambda event: None)
    # False when the sandbox is a local subprocess the user did not ask for by name (no engine
    # behind --sandbox auto): LLM-written scripts are then refused, the templates run instead.
    llm_scripts_allowed: bool = True
    # Answers the graph's human-review interrupt: the resume value, or None to pause the run
    # there (checkpointed; `resume` asks again). Unset: the run pauses at the first one.
    on_interrupt: Callable[[dict], object | None] | None = None


def resolve_device(requested: str, sandbox: Sandbox) -> str:
    """The device scripts are told to use: what the sandbox actually got, if it knows."""
    granted = getattr(sandbox, "device", None)  # DockerSandbox probes the engine's GPU runtime
    if granted is not None:
        return granted
    if requested != "auto":
        return requested
    import torch  # noqa: PLC0415 - torch: seconds to import, only here

    return "cuda" if torch.cuda.is_available() else "cpu"


def _gold(store: RunStore) -> dict[str, str]:
    rows = store.rows()
    rows = rows[rows["gold"].notna()]
    return dict(zip(rows["id"], rows["gold"].astype(str), strict=True))


def open_llm(options: RunOptions, stack: ExitStack) -> Endpoint:
    """The run's LLM endpoint; a local server lives as long as `stack`."""
    if options.endpoint is not None:
        return options.endpoint
    return stack.enter_context(
        open_endpoint(
            base_url=options.llm_base_url,
            api_key=options.llm_api_key,
            model=options.llm_model,
            gguf=options.gguf,
        )
    )


def open_reviewer(
    task: TaskSpec, store: RunStore, options: RunOptions, stack: ExitStack, endpoint=None
):
    """The run's reviewer (None: none, or a human through the graph's interrupt); a local LLM
    server lives as long as `stack`."""
    if task.reviewer in ("none", "human"):
        return None
    if task.oracle_column:
        return review.OracleReviewer(_gold(store))
    endpoint = endpoint or open_llm(options, stack)
    check_price(task, endpoint)
    if task.review_batch_api and endpoint.local:
        raise InputError(
            "--review-batch-api needs a remote endpoint that offers OpenAI's Batch API "
            "(--llm-base-url); the local server answers call by call"
        )
    # Counted from the ledger, so a resumed run has only what its first part left.
    budget = Budget.from_ledger(store.ledger_path, task.max_llm_calls, task.max_cost_usd)
    client = stack.enter_context(
        LLMClient.for_endpoint(endpoint, store.root, price=task_price(task), budget=budget)
    )
    reviewer = review.LLMReviewer(
        client,
        task.labels,
        task.description,
        label_descriptions=task.label_descriptions,
        label_words=task.label_words,
        batch_size=review.batch_size_for(task.review_batch, endpoint),
        shots=task.review_shots,
        shot_layout=task.review_shot_layout,
        probabilities=task.review_probabilities,
        self_check=task.review_self_check,
        first_token=endpoint.local,
        batch_jobs=store.batch_jobs_dir if task.review_batch_api else None,
        # llama.cpp's server answers one request at a time unless started with --parallel.
        concurrency=1 if endpoint.local else options.llm_concurrency,
    )
    return reviewer


def task_price(task: TaskSpec) -> Price | None:
    """The user's price for the run's LLM, or None for the default table."""
    return None if task.price_in is None else Price(task.price_in, task.price_out)


def check_price(task: TaskSpec, endpoint) -> None:
    """A cost cap needs a price: refuse a model whose answers we cannot price."""
    if task.max_cost_usd is None or task.price_in is not None:
        return
    if endpoint.model not in price_table(endpoint):
        raise InputError(
            f"--max-cost needs the price of {endpoint.model}, which is not in the built-in "
            "table; give --price-in and --price-out (USD per 1M tokens)"
        )


ESTIMATE_SAMPLE_ROWS = 8


def with_review_estimate(progress: Progress, reviewer, store: RunStore) -> Progress:
    """Pass events on; once selection knows the expected escalation, and before any review
    is paid for, announce the review's calls and cost (a ReviewEstimated event)."""
    if not isinstance(reviewer, LLMReviewer):
        return progress

    def relay(event: Event) -> None:
        progress(event)
        if isinstance(event, Selected) and event.expected_escalation is not None:
            rows = store.rows()
            texts = rows["text"].dropna().head(ESTIMATE_SAMPLE_ROWS).tolist()
            estimate = estimate_review(
                reviewer, texts, int(rows["text"].notna().sum()), event.expected_escalation
            )
            progress(ReviewEstimated(estimate=estimate))

    return relay


def open_controller_llm(endpoint, store: RunStore, stack: ExitStack):
    """The meta-controller's client (label maps, scripts): the run's cache and ledger, patient
    with long answers."""
    client = stack.enter_context(
        LLMClient.for_endpoint(endpoint, store.root, price=task_price(store.task()))
    )
    # A script is ~1000 tokens: minutes on a busy local server, past the reviewer's timeout,
    # and a retry after a timeout would only pay for the same answer twice.
    client.chat_model = make_chat_model(endpoint, timeout_s=CODEGEN_TIMEOUT_S, max_retries=0)
    return client


def confine_scripts(store: RunStore, options: RunOptions) -> TaskSpec:
    """The run's task, with codegen switched to the templates when LLM-written scripts may not
    run in options.sandbox; a run whose scripts the LLM already wrote stops there."""
    task = store.task()
    if options.llm_scripts_allowed:
        return task
    manifest = store.scripts_manifest_path
    if manifest.is_file() and any(e["origin"] == "llm" for e in read_json(manifest)["scripts"]):
        raise InputError(
            f"{store.root}: its scripts were written by the LLM and no Docker engine answers; "
            "start Docker, or pass --sandbox local to run them unconfined"
        )
    if task.codegen != "template":
        if task.codegen == "llm":
            log.warning(
                "no Docker engine answers, so the templates write the scripts, not the LLM; "
                "pass --sandbox local to run LLM-written scripts unconfined"
            )
        task = task.model_copy(update={"codegen": "template"})
        # The nodes read the task from task.json, which now says what the run really does.
        write_json(task.model_dump(mode="json"), store.task_path)
    return task


def with_label_descriptions(
    task: TaskSpec, store: RunStore, llm: LLMClient | None, progress: Progress
) -> TaskSpec:
    """The task with a meaning per label for the reviewer LLM: the user's (--label-desc), or
    drafted by the LLM once per run, saved in task.json (a person may correct it there) and
    shown (a LabelsDescribed event) before any sample is reviewed."""
    if task.reviewer != "llm" or llm is None:
        return task
    if not task.label_descriptions and task.draft_label_descriptions:
        drafted = review.draft_label_descriptions(
            llm, task.description, task.labels, task.label_words
        )
        if drafted:
            task = task.model_copy(
                update={"label_descriptions": drafted, "label_descriptions_drafted": True}
            )
            write_json(task.model_dump(mode="json"), store.task_path)
    if task.label_descriptions and task.label_descriptions_drafted:
        progress(LabelsDescribed(dict(task.label_descriptions), str(store.task_path)))
    return task


def run_graph(store: RunStore, options: RunOptions, *, resume: bool) -> dict:
    """Run (or resume) the graph to the end, or to a human-review interrupt nobody answered;
    returns the state it stopped in (`is_finished` tells which)."""
    task = confine_scripts(store, options)
    graph = build_graph()
    with ExitStack() as stack:
        wants_llm = task.codegen == "llm" or task.reviewer == "llm"
        endpoint = open_llm(options, stack) if wants_llm else None
        llm = open_controller_llm(endpoint, store, stack) if endpoint is not None else None
        task = with_label_descriptions(task, store, llm, options.progress)
        reviewer = open_reviewer(task, store, options, stack, endpoint)
        # Every core for torch as for the local LLM server: the graph runs one node at a time,
        # so they take turns (agent.llm.local_server.DEFAULT_THREADS says what was measured).
        threads = os.cpu_count() or 1
        services = Services(
            hub=options.hub,
            sandbox=options.sandbox,
            reviewer=reviewer,
            device=resolve_device(options.device, options.sandbox),
            limits=Limits(timeout_s=options.timeout_s, threads=threads),
            progress=with_review_estimate(options.progress, reviewer, store),
            llm=llm,
            vote_cache=options.vote_cache,
            deploy_cache=options.deploy_cache,
            script_cache=options.script_cache,
            engine=options.engine,
            label_map_cache=options.label_map_cache,
            smoke_cache=options.smoke_cache,
        )
        record_engine(store, options.engine)
        conn = sqlite3.connect(store.checkpoints_path, check_same_thread=False)
        stack.callback(conn.close)
        app = graph.compile(checkpointer=SqliteSaver(conn))
        config = {
            "configurable": {"thread_id": store.root.name},
            "recursion_limit": 50 + 6 * max_chunks(store),
        }
        if resume and app.get_state(config).values:
            start = None  # continue from the last checkpoint
        else:
            start = {
                "run_dir": str(store.root.resolve()),
                "next_chunk": 0,
                "pool_chunks": [],
                "pool_size": 0,
                "cycles": 0,
                "escalated": 0,
            }
        while True:
            for _ in app.stream(start, config, context=services, stream_mode="updates"):
                pass
            snapshot = app.get_state(config)
            if not snapshot.interrupts or options.on_interrupt is None:
                return snapshot.values
            answer = options.on_interrupt(snapshot.interrupts[0].value)
            if answer is None:
                return snapshot.values
            start = Command(resume=answer)


def preflight(task: TaskSpec, options: RunOptions) -> None:
    """Fail before anything is written when the LLM (reviewer or codegen) cannot be had."""
    if (task.reviewer != "llm" and task.codegen != "llm") or options.endpoint is not None:
        return
    remote = resolve_endpoint(options.llm_base_url, options.llm_api_key, options.llm_model)
    if remote is not None:
        check_endpoint(remote)
        if task.reviewer == "llm":
            check_price(task, remote)
    else:
        LocalServer.check_installed()
        resolve_gguf(options.gguf)


def create_run(task: TaskSpec, run_dir: Path) -> RunStore:
    source = read_input(task)
    return RunStore.create(run_dir, task, prepare_input(task, source), source)


def is_finished(store: RunStore) -> bool:
    return store.report_path.is_file() and Path(store.labels_path).is_file()
