"""The graph's nodes: plain functions of (state, runtime) that call the modules doing the work.

Each node is idempotent: it checks the run directory for what it would write and skips work
already done, so a run resumed from any checkpoint repeats nothing that finished.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agent.committee.labels import Alignment, llm_proposer
from agent.committee.selection import Policy, select
from agent.domain import (
    Aligned,
    Annotating,
    CommitteeMember,
    Deployed,
    Dropped,
    Event,
    Finetuned,
    FinetuneStarted,
    Progress,
    Reported,
    Reviewed,
    Reviewing,
    ReviewProgress,
    Selected,
    Voted,
)
from agent.errors import ScriptUnavailable
from agent.hub.protocol import ModelHub
from agent.llm.client import AnswerCache, LLMClient
from agent.pipeline import trust
from agent.pipeline.annotate import (
    Engine,
    LocalEngine,
    Step,
    annotate_chunk,
    scratch_dir,
    vote_chunk,
)
from agent.pipeline.chunking import estimated_chunks, plan_chunk, rows_until_finetune
from agent.pipeline.deploycache import deploy_key, fetch_deployed, keep_deployed
from agent.pipeline.finetune import finetune_cycle
from agent.pipeline.hardpool import audit_chunk, review_chunk
from agent.pipeline.human import expert_count, hard_items
from agent.pipeline.report import write_outputs
from agent.pipeline.review import Reviewer, teacher_of
from agent.pipeline.state import RunState
from agent.pipeline.votecache import add_to_cache, fill_from_cache
from agent.scripts.codegen import generate_scripts, local_source, write_scripts
from agent.scripts.contract import MODEL_OUTPUT, deploy_args
from agent.store.runstore import RunStore, read_json, write_json
from sandbox.base import Limits, Sandbox


def _quiet(event: Event) -> None:
    """Default progress sink: nodes report events; the CLI decides how to show them."""


@dataclass
class Services:
    """What nodes use but the checkpoint must not hold: live clients and settings."""

    hub: ModelHub
    sandbox: Sandbox
    reviewer: Reviewer | None  # None: no LLM or oracle review (off, or a human's)
    device: str = "cpu"
    limits: Limits = field(default_factory=Limits)
    progress: Progress = _quiet
    # The meta-controller's own calls: label maps, scripts (--codegen auto or llm)
    llm: LLMClient | None = None
    vote_cache: Path | None = None  # v0 votes shared between runs (agent.pipeline.votecache)
    deploy_cache: Path | None = None  # v0 models shared between runs (agent.pipeline.deploycache)
    script_cache: Path | None = None  # passed LLM scripts per kind (agent.scripts.scriptcache)
    engine: Engine = field(default_factory=LocalEngine)  # who runs the annotate steps
    # LLM label-map proposals shared between runs (labels.machine_label_map_cache)
    label_map_cache: Path | None = None
    smoke_cache: Path | None = None  # smoke-test answers shared between runs (selection)


def _store(state: RunState) -> RunStore:
    return RunStore(state["run_dir"])


def select_models(state: RunState, runtime: Runtime[Services]) -> dict:
    """Eq. 1: Top-k models by task/card similarity among those that fit the labels."""
    store = _store(state)
    if not store.models_path.is_file():
        started = time.perf_counter()
        # The smoke test runs every candidate on the user's own first rows, and compares its
        # labels with the gold labels the run may learn from (--gold-column; not the labels
        # an eval or the demo keeps only to score the run with).
        texts = gold = ids = None
        if store.n_chunks():
            first = pd.read_parquet(store.input_chunk(0))
            texts, ids = first["text"].tolist(), first["id"].astype(str).tolist()
            known = store.gold_evidence()
            if len(known):
                gold = [None if pd.isna(g) else str(g) for g in first["id"].map(known)]
        task = store.task()
        llm, shared = runtime.context.llm, runtime.context.label_map_cache
        # Label maps the names cannot settle are learned from the reviewer's answers on a few
        # of these rows (through the run's LLM cache). A human reviewer is not asked before the
        # run has started.
        reviewer = None if task.reviewer == "human" else runtime.context.reviewer
        with ExitStack() as stack:
            propose = None
            if llm is not None:
                proposals = stack.enter_context(closing(AnswerCache(shared))) if shared else None
                propose = llm_proposer(llm, task.description, proposals)
            chosen, ranked = select(
                runtime.context.hub,
                task,
                texts,
                gold=gold,
                propose=propose,
                teacher=teacher_of(reviewer) if reviewer is not None else None,
                ids=ids,
                policy=Policy(smoke_cache=runtime.context.smoke_cache),
            )
        seconds = time.perf_counter() - started
        write_json(
            {
                "hub": runtime.context.hub.name,
                "seconds": round(seconds, 2),
                "models": [c.to_json() for c in chosen],
                "considered": [c.to_json() for c in ranked],
            },
            store.models_path,
        )
        store.log_timing("select", seconds)
    committee = store.committee()
    record = read_json(store.models_path)
    runtime.context.progress(
        Selected(
            models=[m.id for m in committee],
            expected_escalation=committee[0].expected_escalation,
            considered=len(record["considered"]) if "considered" in record else None,
            seconds=record.get("seconds"),
        )
    )
    return {"versions": state.get("versions") or {m.slug: 0 for m in committee}}


def align_labels(state: RunState, runtime: Runtime[Services]) -> dict:
    """Fix each model's label map (model label -> task label) and its inverse for fine-tuning."""
    store = _store(state)
    task = store.task()
    committee = [
        replace(m, inverse_label_map=Alignment(m.label_map, m.label_evidence).inverse(task.labels))
        for m in store.committee()
    ]
    store.write_committee(committee)
    runtime.context.progress(
        Aligned(
            maps={m.id: m.label_map for m in committee},
            evidence={m.id: m.label_evidence for m in committee},
            learned={
                m.id: m.record["learned_map"] for m in committee if m.record.get("learned_map")
            },
        )
    )
    return {}


def write_pipeline_scripts(state: RunState, runtime: Runtime[Services]) -> dict:
    """Write the deploy script, deploy every model as version 0, then the annotate and
    finetune scripts, verified on the deployed models unless --codegen template."""
    store = _store(state)
    task = store.task()
    committee = store.committee()
    services = runtime.context

    def scripts(roles: tuple[str, ...]) -> None:
        nonlocal committee
        # Generated scripts are tried on the run's first rows; with none there is nothing to try.
        if task.codegen == "template" or not store.n_chunks():
            write_scripts(store, task, committee, roles)
            return
        while True:
            try:
                generate_scripts(
                    store,
                    task,
                    committee,
                    roles,
                    services.llm,
                    services.sandbox,
                    device=services.device,
                    limits=services.limits,
                    progress=services.progress,
                    mode=task.codegen,
                    script_cache=services.script_cache,
                )
                return
            except ScriptUnavailable as err:
                # The members' scripts already made are kept: only the rest are made again.
                committee = drop_member(store, committee, err)
                services.progress(Dropped(err.model_id, str(err), len(committee)))

    scripts(("deploy",))
    started = time.perf_counter()
    steps, targets = [], {}
    for model in committee:
        out = store.model_dir(model.slug, 0)
        if (out / "config.json").is_file():
            continue
        source = local_source(model.source)
        script = store.script_path("deploy", model.slug)
        cache, key = services.deploy_cache, None
        if cache is not None:
            key = deploy_key(model, source, script)
            shutil.rmtree(out, ignore_errors=True)  # what a copy killed midway left
            if fetch_deployed(cache, key, out):
                services.progress(Deployed(model=model.id))
                continue
        name = f"deploy-{model.slug}"
        scratch = scratch_dir(store, name)
        steps.append(
            Step(
                run_dir=store.root,
                name=name,
                script=script,
                args=tuple(deploy_args(str(source), scratch)),
                inputs=(source,),
                output_dir=scratch,
                limits=services.limits,
                output=MODEL_OUTPUT,
            )
        )
        targets[name] = (model, out, key)

    def deployed(step: Step) -> None:
        model, out, key = targets[step.name]
        # Inspected, so from here on the host's: v0 appears only whole and checked.
        shutil.rmtree(out, ignore_errors=True)  # what a deploy killed midway left
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(step.output_dir, out)
        if services.deploy_cache is not None and key is not None:
            keep_deployed(services.deploy_cache, key, out)
        services.progress(Deployed(model=model.id))

    # Side by side, each mostly a process start and a model copy; on this machine whatever the
    # engine, since the hub's files are here.
    LocalEngine().run_steps(services.sandbox, steps, deployed)
    store.log_timing("deploy", time.perf_counter() - started)
    scripts(("annotate", "finetune"))
    versions = state.get("versions") or {}
    return {
        "next_chunk": state.get("next_chunk", 0),
        "versions": {m.slug: versions.get(m.slug, 0) for m in committee},
    }


def drop_member(
    store: RunStore, committee: list[CommitteeMember], err: ScriptUnavailable
) -> list[CommitteeMember]:
    """The committee without the member no script could be made for, recorded in models.json
    (`dropped`, with the reason); a committee that would be left with fewer than two members
    has no disagreement to route, and the run stops with the reason instead. (A
    multi-label toxicity model the templates cannot run and the bundled 1.5B LLM could not
    write for stopped a whole run on jigsaw toxicity; its two sentiment partners could vote.)"""
    remaining = [m for m in committee if m.id != err.model_id]
    if len(remaining) == len(committee) or len(remaining) < 2:
        raise err
    data = read_json(store.models_path)
    data.setdefault("dropped", []).append({"id": err.model_id, "reason": str(err)})
    write_json(data, store.models_path)
    store.write_committee(remaining)
    return remaining


def annotate(state: RunState, runtime: Runtime[Services]) -> dict:
    """Cut the next chunk (sized to reach β, see pipeline.chunking) and let every SLM label it."""
    store = _store(state)
    chunk = state["next_chunk"]
    rows = plan_chunk(store, chunk, state.get("pool_chunks", []), state.get("pool_size", 0))
    runtime.context.progress(
        Annotating(chunk=chunk, rows=rows, n_chunks=estimated_chunks(store, chunk))
    )
    services, committee, versions = runtime.context, store.committee(), state["versions"]
    if services.vote_cache:
        fill_from_cache(store, services.vote_cache, committee, versions, chunk, services.device)
    window = rows_until_finetune(
        store,
        chunk,
        state.get("pool_chunks", []),
        state.get("pool_size", 0),
        committee[0].expected_escalation,
    )
    annotate_chunk(
        store,
        services.sandbox,
        committee,
        versions,
        chunk,
        services.device,
        services.limits,
        window=window,
        engine=services.engine,
    )
    if services.vote_cache:
        add_to_cache(store, services.vote_cache, committee, versions, chunk, services.device)
    return {}


def vote_and_route(state: RunState, runtime: Runtime[Services]) -> dict:
    store = _store(state)
    counts = vote_chunk(store, store.committee(), state["versions"], state["next_chunk"])
    runtime.context.progress(Voted(chunk=state["next_chunk"], **counts))
    return {"escalated": state.get("escalated", 0) + counts["hard"]}


def review(state: RunState, runtime: Runtime[Services]) -> dict:
    store = _store(state)
    chunk = state["next_chunk"]
    runtime.context.progress(Reviewing(chunk=chunk))
    human = store.task().reviewer == "human"
    counts = review_chunk(
        store,
        None if human else runtime.context.reviewer,
        store.committee(),
        chunk,
        progress=lambda done, total: runtime.context.progress(
            ReviewProgress(chunk=chunk, done=done, total=total)
        ),
    )
    if human:
        pending = hard_items(store, [chunk])
        if pending:
            # The graph stops here (checkpointed) until the CLI resumes it. The console saves
            # each answer into hard/ as it is given, so the resume value only reports; this
            # node runs again from the top on resume and finds the answers there.
            interrupt(
                {
                    "chunk": chunk,
                    "labels": store.task().labels,
                    "items": [item.to_json() for item in pending],
                }
            )
        counts = {**counts, "expert": expert_count(store, chunk)}
    else:
        audit_chunk(store, runtime.context.reviewer, store.committee(), chunk)
    trust.update(store, store.committee())
    runtime.context.progress(Reviewed(chunk=chunk, **counts))
    return {
        "next_chunk": chunk + 1,
        "pool_chunks": [*state.get("pool_chunks", []), chunk],
        "pool_size": state.get("pool_size", 0) + counts["expert"],
    }


def finetune(state: RunState, runtime: Runtime[Services]) -> dict:
    store = _store(state)
    cycle = state.get("cycles", 0) + 1
    runtime.context.progress(FinetuneStarted(cycle=cycle, samples=state["pool_size"]))
    versions, record = finetune_cycle(
        store,
        runtime.context.sandbox,
        store.committee(),
        state["versions"],
        state["pool_chunks"],
        list(range(state["next_chunk"])),
        cycle,
        runtime.context.device,
        runtime.context.limits,
        engine=runtime.context.engine,
    )
    runtime.context.progress(
        Finetuned(cycle=cycle, models=record["models"], skipped=record.get("skipped"))
    )
    return {"versions": versions, "pool_chunks": [], "pool_size": 0, "cycles": cycle}


def report(state: RunState, runtime: Runtime[Services]) -> dict:
    store = _store(state)
    metrics = write_outputs(store, store.committee())
    runtime.context.progress(Reported(metrics=metrics))
    return {}


# ---- routing ------------------------------------------------------------------------------
def _rows_left(state: RunState) -> bool:
    return _store(state).rows_left(state["next_chunk"]) > 0


def after_scripts(state: RunState) -> str:
    return "annotate" if _rows_left(state) else "report"


def after_review(state: RunState, runtime: Runtime[Services]) -> str:
    """Eq. 4's trigger: fine-tune once the reviewed hard pool reaches β and rows remain."""
    more = _rows_left(state)
    if more and state.get("pool_size", 0) >= _store(state).task().beta:
        return "finetune"
    return "annotate" if more else "report"
