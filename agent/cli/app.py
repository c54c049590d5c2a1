"""`autoannotator`: label text with a committee of small models orchestrated by an LLM."""

from __future__ import annotations

import signal
import sys
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from agent import api
from agent.cli.chat import ChatSession, open_chat_model, repl
from agent.cli.common import USER_ERRORS, console, fail, out
from agent.cli.interop import export as export_command
from agent.cli.interop import import_ as import_command
from agent.cli.models import models_app
from agent.cli.options import (
    DEFAULT_STEP_TIMEOUT_S,
    PIPELINE,
    TRUST,
    ApiKeyOption,
    AuditShareOption,
    BaseUrlOption,
    ChunkSizeOption,
    CodegenOption,
    ConcurrencyOption,
    DeviceOption,
    DraftLabelDescOption,
    Engine,
    EngineOption,
    EpsilonOption,
    GgufOption,
    HubOption,
    LabelDescOption,
    LabelMapOption,
    LabelsOption,
    LabelWordsOption,
    MaxCallsOption,
    MaxCostOption,
    MinConfidenceOption,
    ModelOption,
    PriceInOption,
    PriceOutOption,
    QuietOption,
    RayAddressOption,
    ReplayOption,
    Review,
    ReviewBatchApiOption,
    ReviewBatchOption,
    ReviewDebiasOption,
    ReviewProbabilitiesOption,
    ReviewSelfCheckOption,
    ReviewShotLayoutOption,
    ReviewShotsOption,
    RoutingOption,
    SandboxOption,
    StepTimeoutOption,
    TaskOption,
    TextColumnOption,
    label_map_fields,
    run_options,
)
from agent.cli.progress import ProgressView
from agent.cli.review import answer_interrupt
from agent.cli.review import review as review_command
from agent.cli.sandbox import sandbox_app
from agent.cli.scripts import scripts_app
from agent.committee.selection import SelectionError
from agent.domain import Routing, ShotLayout
from agent.errors import UserError
from agent.hub.demo import TASK_LABELS, demo_input
from agent.pipeline.evaluate import ablation
from agent.pipeline.evaluate import evaluate as run_eval
from agent.pipeline.runner import (
    DEFAULT_LLM_CONCURRENCY,
    RunOptions,
)
from agent.store.runstore import RunStore
from agent.task import DEFAULT_REVIEW_SHOTS, TaskSpec

app = typer.Typer(
    help=__doc__
    + "\n\nQuick start: `autoannotator demo` labels bundled tweets end to end with the embedded "
    "defaults (local LLM, local model catalog). Your own data: `autoannotator run --data "
    "FILE --labels a,b,c --task 'what to label'`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _on_start() -> None:
    # SIGTERM (kill, a service manager) must unwind like Ctrl-C, so that exit handlers stop the
    # local LLM server and close the checkpoint instead of leaving a 2 GB process behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _task_or_fail(**fields) -> TaskSpec:
    try:
        return api.task_spec(**fields)
    except UserError as err:  # the field that is wrong, in one line
        fail(str(err))
        raise  # unreachable; fail() exits


def _execute(store: RunStore, options: RunOptions, *, resume: bool, quiet: bool) -> dict:
    with ProgressView(quiet) as view:
        options = replace(options, progress=view)
        if not quiet:

            def on_interrupt(payload: dict):
                with view.paused():
                    return answer_interrupt(store, payload)

            options = replace(options, on_interrupt=on_interrupt)
        result = api.execute(store, options, resume=resume)
    if not result.finished:
        console.print(
            f"paused for human review; answers so far are saved. Continue with: "
            f"autoannotator resume {store.root}",
            soft_wrap=True,
        )
        raise typer.Exit(0)
    return result.metrics


def _summary(store: RunStore, metrics: dict) -> None:
    llm = metrics["llm"]
    out.print(
        f"labeled {metrics['labeled']}/{metrics['rows']} rows; "
        f"{metrics['escalation_rate']:.1%} escalated; LLM calls {llm['calls']}; "
        f"fine-tune cycles {len(metrics['finetune_cycles'])}"
    )
    if "accuracy_vs_gold" in metrics:
        out.print(f"accuracy against gold: {metrics['accuracy_vs_gold']:.2%}")
    # soft_wrap: a path split over two lines cannot be copied; let the terminal wrap it.
    out.print(f"labels: {store.labels_path}  (also {store.labels_csv_path.name})", soft_wrap=True)
    out.print(f"report: {store.report_path}", soft_wrap=True)


def _codegen(choice: str | None) -> str:
    """--codegen as given (its option checked it), else auto: the LLM writes only what the
    templates cannot run, so a first run with defaults spends no time on scripts."""
    return choice or "auto"


def _int_list(value: str, flag: str) -> list[int]:
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        fail(f"{flag} takes whole numbers separated by commas, e.g. 2,3,4; got {value!r}")
    if not numbers or len(set(numbers)) != len(numbers):
        fail(f"{flag} takes distinct whole numbers separated by commas, e.g. 2,3,4; got {value!r}")
    return numbers


def _run_dir(run_dir: Path | None, prefix: str = "run") -> Path:
    return run_dir or Path("runs") / f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}"


@app.command()
def run(
    data: Annotated[Path, typer.Option("--data", help="CSV, TSV, JSONL or parquet file to label.")],
    labels: LabelsOption,
    task: TaskOption,
    text_column: TextColumnOption = "text",
    label_map: LabelMapOption = None,
    id_column: Annotated[
        str | None, typer.Option("--id-column", help="Unique id column (default: row).")
    ] = None,
    gold_column: Annotated[
        str | None,
        typer.Option(
            "--gold-column",
            help="Labels you already have: rows with a value keep it (source gold), are never "
            "sent to review, and anchor every reliability estimate; rows without are labeled.",
            rich_help_panel=TRUST,
        ),
    ] = None,
    k: Annotated[
        int, typer.Option("--k", help="Committee size (paper: 3).", rich_help_panel=PIPELINE)
    ] = 3,
    epsilon: EpsilonOption = None,
    beta: Annotated[
        int,
        typer.Option(
            "--beta",
            help="Fine-tune when this many reviewed hard samples have piled up (paper: 2000).",
            rich_help_panel=PIPELINE,
        ),
    ] = 2000,
    chunk_size: ChunkSizeOption = 1000,
    replay_ratio: ReplayOption = 1.0,
    reviewer: Annotated[
        str,
        typer.Option(
            "--reviewer",
            help="llm, human (you label the hard samples as they come), none, or oracle:COLUMN "
            "(gold labels from COLUMN: the paper's +Human row).",
        ),
    ] = "llm",
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Default: runs/run-<timestamp>.")
    ] = None,
    hub: HubOption = None,
    sandbox: SandboxOption = "auto",
    device: DeviceOption = "auto",
    llm_base_url: BaseUrlOption = None,
    llm_api_key: ApiKeyOption = None,
    llm_model: ModelOption = None,
    gguf: GgufOption = None,
    llm_concurrency: ConcurrencyOption = DEFAULT_LLM_CONCURRENCY,
    step_timeout: StepTimeoutOption = DEFAULT_STEP_TIMEOUT_S,
    engine_kind: EngineOption = None,
    ray_address: RayAddressOption = None,
    quiet: QuietOption = False,
    codegen: CodegenOption = None,
    review_batch: ReviewBatchOption = "auto",
    review_shots: ReviewShotsOption = DEFAULT_REVIEW_SHOTS,
    review_shot_layout: ReviewShotLayoutOption = ShotLayout.FIXED,
    review_probabilities: ReviewProbabilitiesOption = True,
    review_debias: ReviewDebiasOption = True,
    review_self_check: ReviewSelfCheckOption = None,
    review_batch_api: ReviewBatchApiOption = False,
    max_llm_calls: MaxCallsOption = None,
    max_cost: MaxCostOption = None,
    price_in: PriceInOption = None,
    price_out: PriceOutOption = None,
    label_desc: LabelDescOption = None,
    draft_label_desc: DraftLabelDescOption = True,
    label_words: LabelWordsOption = None,
    audit_share: AuditShareOption = 0.05,
    routing: RoutingOption = Routing.UNCERTAINTY,
    min_confidence: MinConfidenceOption = None,
) -> None:
    """Label a file end to end: select SLMs, write scripts, vote, review, fine-tune, report."""
    engine = Engine(
        hub=hub,
        sandbox=sandbox,
        device=device,
        llm_base_url=llm_base_url,
        llm_api_key=llm_api_key,
        llm_model=llm_model,
        gguf=gguf,
        llm_concurrency=llm_concurrency,
        step_timeout=step_timeout,
        engine=engine_kind,
        ray_address=ray_address,
        quiet=quiet,
    )
    review = Review(
        batch=review_batch,
        shots=review_shots,
        shot_layout=review_shot_layout,
        probabilities=review_probabilities,
        debias=review_debias,
        self_check=review_self_check,
        batch_api=review_batch_api,
        max_calls=max_llm_calls,
        max_cost=max_cost,
        price_in=price_in,
        price_out=price_out,
        label_desc=tuple(label_desc or ()),
        draft_desc=draft_label_desc,
        label_words=tuple(label_words or ()),
        audit_share=audit_share,
        routing=routing,
        min_confidence=min_confidence,
    )
    spec = _task_or_fail(
        description=task,
        labels=labels.split(","),
        data_path=str(data),
        text_column=text_column,
        id_column=id_column,
        gold_column=gold_column,
        gold_evidence=1.0 if gold_column else 0.0,
        k=k,
        epsilon=epsilon,
        beta=beta,
        chunk_size=chunk_size,
        replay_ratio=replay_ratio,
        reviewer=reviewer,
        codegen=_codegen(codegen),
        **label_map_fields(label_map),
        **review.task_fields(),
    )
    target = _run_dir(run_dir)
    store = None
    try:
        store, options = _create(spec, target, engine)
        if not quiet:
            console.print(
                f"run directory: {store.root}  (resume: autoannotator resume {store.root})",
                soft_wrap=True,
            )
            console.print(f"engine: {options.engine.describe()}", soft_wrap=True)
        metrics = _execute(store, options, resume=False, quiet=quiet)
    except SelectionError as err:
        # The fix changes the task, which a resume keeps: the run starts over, and this one
        # has labeled nothing.
        where = f" ({store.root} holds no labels; remove it)" if store else ""
        fail(f"{err.summary}; then run again{where}\n{err.details}".rstrip())
    except USER_ERRORS as err:
        # Past its creation the run directory is whole (every step is checkpointed): say how
        # to continue once the cause is fixed.
        fail(f"{err}; then: autoannotator resume {store.root}" if store else str(err))
    _summary(store, metrics)


def _create(spec: TaskSpec, run_dir: Path, engine: Engine) -> tuple[RunStore, RunOptions]:
    """The API's start (nothing written for a refused run), with the command's engine."""
    return api.start(spec, run_dir, lambda run_id: run_options(engine, run_id=run_id))


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run directory from `run`.")],
    hub: HubOption = None,
    sandbox: SandboxOption = "auto",
    device: DeviceOption = "auto",
    llm_base_url: BaseUrlOption = None,
    llm_api_key: ApiKeyOption = None,
    llm_model: ModelOption = None,
    gguf: GgufOption = None,
    llm_concurrency: ConcurrencyOption = DEFAULT_LLM_CONCURRENCY,
    step_timeout: StepTimeoutOption = DEFAULT_STEP_TIMEOUT_S,
    engine_kind: EngineOption = None,
    ray_address: RayAddressOption = None,
    quiet: QuietOption = False,
) -> None:
    """Finish a run that was stopped: no finished chunk is relabeled, no LLM answer paid twice."""
    engine = Engine(
        hub=hub,
        sandbox=sandbox,
        device=device,
        llm_base_url=llm_base_url,
        llm_api_key=llm_api_key,
        llm_model=llm_model,
        gguf=gguf,
        llm_concurrency=llm_concurrency,
        step_timeout=step_timeout,
        engine=engine_kind,
        ray_address=ray_address,
        quiet=quiet,
    )
    store = RunStore(run_dir)
    try:
        store.task()
        kind, address = api.engine_for_resume(store, engine.engine, engine.ray_address)
        options = run_options(
            replace(engine, engine=kind, ray_address=address), run_id=store.run_id
        )
        if not quiet:
            console.print(f"engine: {options.engine.describe()}", soft_wrap=True)
        metrics = _execute(store, options, resume=True, quiet=quiet)
    except USER_ERRORS as err:
        fail(str(err))
    _summary(store, metrics)


@app.command()
def chat(
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Where the first run goes.")
    ] = None,
    hub: HubOption = None,
    sandbox: SandboxOption = "auto",
    device: DeviceOption = "auto",
    llm_base_url: BaseUrlOption = None,
    llm_api_key: ApiKeyOption = None,
    llm_model: ModelOption = None,
    gguf: GgufOption = None,
    llm_concurrency: ConcurrencyOption = DEFAULT_LLM_CONCURRENCY,
    step_timeout: StepTimeoutOption = DEFAULT_STEP_TIMEOUT_S,
    label_map: LabelMapOption = None,
) -> None:
    """Describe a labeling job in plain words; confirm the task, watch it run, ask about it."""
    engine = Engine(
        hub=hub,
        sandbox=sandbox,
        device=device,
        llm_base_url=llm_base_url,
        llm_api_key=llm_api_key,
        llm_model=llm_model,
        gguf=gguf,
        llm_concurrency=llm_concurrency,
        step_timeout=step_timeout,
    )
    preset = label_map_fields(label_map)  # a malformed map fails before the LLM starts
    with ExitStack() as stack:
        model, endpoint, price = open_chat_model(
            stack, llm_base_url, llm_api_key, llm_model, gguf, console.print
        )

        @cache
        def make_options(target: Path) -> RunOptions:
            # Each run gets its own sandbox (its containers carry its run id); the run's
            # reviewer talks to the chat's LLM: one local server, not two.
            options = run_options(engine, run_id=RunStore(target).run_id)
            return replace(options, endpoint=endpoint)

        repl(ChatSession(console, model, make_options, run_dir=run_dir, price=price, preset=preset))


DEMO_DESCRIPTIONS = {
    "sentiment": "sentiment of tweets: is the author positive, negative or neutral",
    "toxicity": "toxicity of social media comments: toxic or non-toxic",
}


@app.command()
def demo(
    task: Annotated[str, typer.Option("--task", help="sentiment or toxicity.")] = "sentiment",
    rows: Annotated[int, typer.Option("--rows", help="How many bundled rows to label.")] = 600,
    beta: Annotated[
        int,
        typer.Option(
            "--beta", help="Small so the demo shows a fine-tune cycle.", rich_help_panel=PIPELINE
        ),
    ] = 100,
    chunk_size: ChunkSizeOption = 200,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Default: runs/demo-<task>-<timestamp>.")
    ] = None,
    sandbox: SandboxOption = "auto",
    step_timeout: StepTimeoutOption = DEFAULT_STEP_TIMEOUT_S,
    engine_kind: EngineOption = None,
    ray_address: RayAddressOption = None,
    quiet: QuietOption = False,
) -> None:
    """Label bundled sample data end to end with the embedded defaults (no network, no key)."""
    if task not in TASK_LABELS:
        fail(f"unknown demo task {task!r}; use one of {', '.join(TASK_LABELS)}")
    engine = Engine(
        sandbox=sandbox,
        step_timeout=step_timeout,
        engine=engine_kind,
        ray_address=ray_address,
        quiet=quiet,
    )
    source = pd.read_csv(demo_input(task))
    target = _run_dir(run_dir, prefix=f"demo-{task}")
    sample = target.with_name(target.name + ".input.csv")
    sample.parent.mkdir(parents=True, exist_ok=True)
    source.head(rows).rename(columns={"label": "gold"}).to_csv(sample, index=False)
    spec = _task_or_fail(
        description=DEMO_DESCRIPTIONS[task],
        labels=TASK_LABELS[task],
        data_path=str(sample),
        gold_column="gold",
        beta=beta,
        chunk_size=chunk_size,
    )
    try:
        store, options = _create(spec, target, engine)
        if not quiet:
            console.print(f"run directory: {store.root}", soft_wrap=True)
        metrics = _execute(store, options, resume=False, quiet=quiet)
    except USER_ERRORS as err:
        fail(str(err))
    _summary(store, metrics)


@app.command("eval")
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="A labeled file.")],
    labels: LabelsOption,
    task: TaskOption,
    gold_column: Annotated[
        str, typer.Option("--gold-column", help="The column holding the known labels.")
    ] = "label",
    gold_evidence: Annotated[
        float,
        typer.Option(
            "--gold-evidence",
            min=0.0,
            max=1.0,
            help="Share of the gold rows the runs may learn from, as a user's own gold rows "
            "(run --gold-column); scores count only the rest.",
            rich_help_panel=TRUST,
        ),
    ] = 0.0,
    text_column: TextColumnOption = "text",
    label_map: LabelMapOption = None,
    k: Annotated[
        str,
        typer.Option(
            "--k",
            help="Committee size; a list (2,3,4) runs a grid.",
            rich_help_panel=PIPELINE,
        ),
    ] = "3",
    epsilon: EpsilonOption = None,
    beta: Annotated[
        str,
        typer.Option(
            "--beta",
            help="Fine-tune threshold; a list (500,1000,2000) runs a grid.",
            rich_help_panel=PIPELINE,
        ),
    ] = "2000",
    chunk_size: ChunkSizeOption = 1000,
    replay_ratio: ReplayOption = 1.0,
    reviewers: Annotated[
        str,
        typer.Option("--reviewers", help="Which AutoAnnotator rows to run: llm, oracle or both."),
    ] = "llm,oracle",
    llm_sample: Annotated[
        int, typer.Option("--llm-sample", help="Rows the LLM labels alone.")
    ] = 200,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Default: runs/eval-<timestamp>.")
    ] = None,
    hub: HubOption = None,
    sandbox: SandboxOption = "auto",
    device: DeviceOption = "auto",
    llm_base_url: BaseUrlOption = None,
    llm_api_key: ApiKeyOption = None,
    llm_model: ModelOption = None,
    gguf: GgufOption = None,
    llm_concurrency: ConcurrencyOption = DEFAULT_LLM_CONCURRENCY,
    step_timeout: StepTimeoutOption = DEFAULT_STEP_TIMEOUT_S,
    engine_kind: EngineOption = None,
    ray_address: RayAddressOption = None,
    quiet: QuietOption = False,
    codegen: CodegenOption = None,
    review_batch: ReviewBatchOption = "auto",
    review_shots: ReviewShotsOption = DEFAULT_REVIEW_SHOTS,
    review_shot_layout: ReviewShotLayoutOption = ShotLayout.FIXED,
    review_probabilities: ReviewProbabilitiesOption = True,
    review_debias: ReviewDebiasOption = True,
    review_self_check: ReviewSelfCheckOption = None,
    review_batch_api: ReviewBatchApiOption = False,
    max_llm_calls: MaxCallsOption = None,
    max_cost: MaxCostOption = None,
    price_in: PriceInOption = None,
    price_out: PriceOutOption = None,
    label_desc: LabelDescOption = None,
    draft_label_desc: DraftLabelDescOption = True,
    label_words: LabelWordsOption = None,
    audit_share: AuditShareOption = 0.05,
    routing: RoutingOption = Routing.UNCERTAINTY,
    min_confidence: MinConfidenceOption = None,
) -> None:
    """Run the pipeline on a labeled file as if unlabeled; print the paper's table 3/4 columns.

    With several values of --k or --beta, run every combination instead and write the
    paper's tables 5-6 as one grid (ablation.md and ablation.csv in the run directory).
    """
    engine = Engine(
        hub=hub,
        sandbox=sandbox,
        device=device,
        llm_base_url=llm_base_url,
        llm_api_key=llm_api_key,
        llm_model=llm_model,
        gguf=gguf,
        llm_concurrency=llm_concurrency,
        step_timeout=step_timeout,
        engine=engine_kind,
        ray_address=ray_address,
        quiet=quiet,
    )
    review = Review(
        batch=review_batch,
        shots=review_shots,
        shot_layout=review_shot_layout,
        probabilities=review_probabilities,
        debias=review_debias,
        self_check=review_self_check,
        batch_api=review_batch_api,
        max_calls=max_llm_calls,
        max_cost=max_cost,
        price_in=price_in,
        price_out=price_out,
        label_desc=tuple(label_desc or ()),
        draft_desc=draft_label_desc,
        label_words=tuple(label_words or ()),
        audit_share=audit_share,
        routing=routing,
        min_confidence=min_confidence,
    )
    chosen = [r.strip() for r in reviewers.split(",") if r.strip()]
    unknown = set(chosen) - {"llm", "oracle"}
    if unknown or not chosen:
        fail(f"--reviewers takes llm and/or oracle, not {', '.join(sorted(unknown)) or 'nothing'}")
    ks, betas = _int_list(k, "--k"), _int_list(beta, "--beta")
    base = _task_or_fail(
        description=task,
        labels=labels.split(","),
        data_path=str(data),
        text_column=text_column,
        gold_column=gold_column,
        gold_evidence=gold_evidence,
        k=ks[0],
        epsilon=epsilon,
        beta=betas[0],
        chunk_size=chunk_size,
        replay_ratio=replay_ratio,
        codegen=_codegen(codegen),
        **label_map_fields(label_map),
        **review.task_fields(),
    )
    for value in ks[1:]:
        _task_or_fail(**{**base.model_dump(), "k": value})
    for value in betas[1:]:
        _task_or_fail(**{**base.model_dump(), "beta": value})
    root = _run_dir(run_dir, "eval")
    try:
        # One sandbox for all the eval's runs, named after the eval's directory.
        options = run_options(engine, run_id=RunStore(root).run_id)
        with ProgressView(quiet) as view:
            options = replace(options, progress=view)
            if len(ks) * len(betas) > 1:
                table = ablation(base, root, options, chosen, ks, betas)
            else:
                table = run_eval(base, root, options, chosen, llm_sample)
    except USER_ERRORS as err:
        fail(str(err))
    render = Table(title=f"AutoAnnotator eval: {task}")
    for column in table["columns"]:
        render.add_column(column)
    for row in table["rows"]:
        render.add_row(*[str(row[c]) for c in table["columns"]])
    out.print(render)
    out.print(f"table: {table['path']}", soft_wrap=True)
    if "csv" in table:
        out.print(f"csv: {table['csv']}", soft_wrap=True)


app.command("review")(review_command)
app.command("export")(export_command)
app.command("import")(import_command)
app.add_typer(models_app, name="models")
app.add_typer(scripts_app, name="scripts")
app.add_typer(sandbox_app, name="sandbox")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover - `python -m agent.cli.app`
    main()
