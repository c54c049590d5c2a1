"""`autoannotator`: label text with a committee of small models orchestrated by an LLM."""

from __future__ import annotations

import json
import signal
import sys
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime
from functools import cache
from pathlib import Path

import pandas as pd
import typer
from pydantic import ValidationError
from rich.table import Table

from agent.cli.chat import ChatSession, open_chat_model, repl
from agent.cli.common import (
    USER_ERRORS,
    HubOpt,
    console,
    fail,
    open_hub,
    out,
    unconfined_by_surprise,
)
from agent.cli.models import models_app
from agent.cli.progress import ProgressView
from agent.cli.review import answer_interrupt
from agent.cli.review import review as review_command
from agent.cli.sandbox import sandbox_app
from agent.cli.scripts import scripts_app
from agent.hub.demo import TASK_LABELS, demo_input
from agent.pipeline.evaluate import ablation
from agent.pipeline.evaluate import evaluate as run_eval
from agent.pipeline.runner import RunOptions, is_finished, preflight, run_graph
from agent.store.runstore import RunStore, prepare_input
from agent.task import TaskSpec
from sandbox.factory import make_sandbox

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
        return TaskSpec(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "task"
        fail(f"{where}: {first['msg'].removeprefix('Value error, ')}")
        raise  # unreachable; fail() exits


def _execute(store: RunStore, options, *, resume: bool, quiet: bool) -> dict:
    with ProgressView(quiet) as view:
        options = replace(options, progress=view)
        if not quiet:

            def on_interrupt(payload: dict):
                with view.paused():
                    return answer_interrupt(store, payload)

            options = replace(options, on_interrupt=on_interrupt)
        run_graph(store, options, resume=resume)
    if not is_finished(store):
        console.print(
            f"paused for human review; answers so far are saved. Continue with: "
            f"autoannotator resume {store.root}",
            soft_wrap=True,
        )
        raise typer.Exit(0)
    return json.loads(store.metrics_path.read_text(encoding="utf-8"))


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


def _options(hub, sandbox, device, llm_base_url, llm_api_key, llm_model, gguf, timeout, quiet):
    status = None if quiet else (lambda line: console.print(line))
    box = make_sandbox(sandbox, device=device)
    return RunOptions(
        hub=open_hub(hub, status),
        sandbox=box,
        llm_scripts_allowed=not unconfined_by_surprise(sandbox, box),
        llm_base_url=llm_base_url,
        llm_api_key=llm_api_key,
        llm_model=llm_model,
        gguf=gguf,
        device=device,
        timeout_s=timeout,
    )


# Shared option declarations keep `run`, `eval` and `demo` consistent.
SandboxOpt = typer.Option(
    "auto",
    "--sandbox",
    help="Where scripts run: docker, local, or auto (Docker when an engine answers).",
)
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
BaseUrlOpt = typer.Option(
    None,
    "--llm-base-url",
    envvar="OPENAI_BASE_URL",
    help="OpenAI-compatible endpoint. Unset: a local llama.cpp server.",
)
ApiKeyOpt = typer.Option(None, "--llm-api-key", envvar="OPENAI_API_KEY", show_default=False)
ModelOpt = typer.Option(
    None, "--llm-model", envvar="AUTOANNOTATOR_LLM_MODEL", help="Model name at the endpoint."
)
GgufOpt = typer.Option(
    None,
    "--gguf",
    envvar="AUTOANNOTATOR_GGUF",
    help="GGUF file for the local server (default: packaged Qwen2.5-Coder-1.5B).",
)
TimeoutOpt = typer.Option(3600.0, "--step-timeout", help="Seconds one sandboxed script may run.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars; for scripts.")
ChunkSizeOpt = typer.Option(
    1000,
    "--chunk-size",
    help="Rows in the first chunk; later chunks (between a quarter and 4x this) are sized so "
    "fine-tuning starts as the reviewed hard pool reaches β.",
)
ReplayOpt = typer.Option(
    1.0,
    "--replay-ratio",
    help="Fine-tuning replays this many unanimous committee labels per reviewed hard sample, "
    "so the SLMs keep what they knew (0: hard samples only).",
)
CodegenOpt = typer.Option(
    None,
    "--codegen",
    help="Who writes the deploy/annotate/finetune scripts: llm (verified, template fallback) "
    "or template. Default: llm when an LLM reviews, template otherwise.",
)


ReviewBatchOpt = typer.Option(
    "auto",
    "--review-batch",
    help="Samples per LLM review call: N, or auto (1 on the local server, where single calls "
    "reuse the prompt prefix; 20 on a remote endpoint, which charges the instructions per call).",
)
MaxCallsOpt = typer.Option(
    None,
    "--max-llm-calls",
    help="Cap on paid LLM review calls over the whole run (resume included); past it, hard "
    "samples keep the committee's label as committee-capped.",
)
MaxCostOpt = typer.Option(
    None, "--max-cost", help="Cap on the LLM review's cost in USD (needs a known price)."
)
PriceInOpt = typer.Option(
    None,
    "--price-in",
    envvar="AUTOANNOTATOR_PRICE_IN",
    help="USD per 1M input tokens. Default: 0 on the local server, else a built-in table "
    "(gpt-4o-mini, gpt-4o, gpt-4.1-mini, gpt-4.1-nano, gpt-3.5-turbo).",
)
PriceOutOpt = typer.Option(
    None, "--price-out", envvar="AUTOANNOTATOR_PRICE_OUT", help="USD per 1M output tokens."
)
LabelDescOpt = typer.Option(
    None,
    "--label-desc",
    help='What a label means, for the reviewer LLM; repeatable: --label-desc "bearish=expects '
    'the price to fall".',
)
LabelWordsOpt = typer.Option(
    None,
    "--label-words",
    help="Words the reviewer LLM sees instead of labels, mapped back: "
    "bearish=negative,bullish=positive.",
)


def _pairs(option: str, items: list[str]) -> dict[str, str]:
    """`label=text` items (`--label-desc`, `--label-words`) as a dict; a bad one fails."""
    pairs = {}
    for item in items:
        label, sep, text = item.partition("=")
        if not sep or not label.strip() or not text.strip():
            fail(f"{option} takes label=text, not {item!r}")
        pairs[label.strip()] = text.strip()
    return pairs


def _review_fields(batch, max_calls, max_cost, price_in, price_out, label_desc, label_words):
    """The TaskSpec fields of the LLM review options shared by `run` and `eval`."""
    if batch != "auto" and not batch.isdigit():
        fail(f"--review-batch takes auto or a number of samples per call, not {batch!r}")
    words = [w for group in (label_words or []) for w in group.split(",") if w.strip()]
    return {
        "review_batch": batch if batch == "auto" else int(batch),
        "max_llm_calls": max_calls,
        "max_cost_usd": max_cost,
        "price_in": price_in,
        "price_out": price_out,
        "label_descriptions": _pairs("--label-desc", label_desc or []),
        "label_words": _pairs("--label-words", words),
    }


def _codegen(choice: str | None, llm_configured: bool) -> str:
    if choice is None:
        return "llm" if llm_configured else "template"
    if choice not in ("llm", "template"):
        fail(f"--codegen takes llm or template, not {choice!r}")
    return choice


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
    data: Path = typer.Option(..., "--data", help="CSV, TSV, JSONL or parquet file to label."),
    labels: str = typer.Option(..., "--labels", help="Comma-separated labels, e.g. pos,neg."),
    task: str = typer.Option(..., "--task", help="What to label, in plain words."),
    text_column: str = typer.Option("text", "--text-column"),
    id_column: str = typer.Option(None, "--id-column", help="Unique id column (default: row)."),
    k: int = typer.Option(3, "--k", help="Committee size (paper: 3)."),
    epsilon: float = typer.Option(
        None,
        "--epsilon",
        help="Route when U(x) >= ε. Default 1/k: "
        "every disagreement goes to review, as in the paper.",
    ),
    beta: int = typer.Option(
        2000,
        "--beta",
        help="Fine-tune when this many reviewed hard samples have piled up (paper: 2000).",
    ),
    chunk_size: int = ChunkSizeOpt,
    replay_ratio: float = ReplayOpt,
    reviewer: str = typer.Option(
        "llm",
        "--reviewer",
        help="llm, human (you label the hard samples as they come), none, or oracle:COLUMN "
        "(gold labels from COLUMN: the paper's +Human row).",
    ),
    run_dir: Path = typer.Option(None, "--run-dir", help="Default: runs/run-<timestamp>."),
    hub: str = HubOpt,
    sandbox: str = SandboxOpt,
    device: str = DeviceOpt,
    llm_base_url: str = BaseUrlOpt,
    llm_api_key: str = ApiKeyOpt,
    llm_model: str = ModelOpt,
    gguf: str = GgufOpt,
    step_timeout: float = TimeoutOpt,
    quiet: bool = QuietOpt,
    codegen: str = CodegenOpt,
    review_batch: str = ReviewBatchOpt,
    max_llm_calls: int = MaxCallsOpt,
    max_cost: float = MaxCostOpt,
    price_in: float = PriceInOpt,
    price_out: float = PriceOutOpt,
    label_desc: list[str] = LabelDescOpt,
    label_words: list[str] = LabelWordsOpt,
) -> None:
    """Label a file end to end: select SLMs, write scripts, vote, review, fine-tune, report."""
    spec = _task_or_fail(
        description=task,
        labels=labels.split(","),
        data_path=str(data),
        text_column=text_column,
        id_column=id_column,
        k=k,
        epsilon=epsilon,
        beta=beta,
        chunk_size=chunk_size,
        replay_ratio=replay_ratio,
        reviewer=reviewer,
        device=device,
        codegen=_codegen(codegen, reviewer == "llm"),
        **_review_fields(
            review_batch, max_llm_calls, max_cost, price_in, price_out, label_desc, label_words
        ),
    )
    store = None
    try:
        options = _options(
            hub, sandbox, device, llm_base_url, llm_api_key, llm_model, gguf, step_timeout, quiet
        )
        store = _create(spec, _run_dir(run_dir), options)
        if not quiet:
            console.print(
                f"run directory: {store.root}  (resume: autoannotator resume {store.root})",
                soft_wrap=True,
            )
        metrics = _execute(store, options, resume=False, quiet=quiet)
    except USER_ERRORS as err:
        # Past its creation the run directory is whole (every step is checkpointed): say how
        # to continue once the cause is fixed.
        fail(f"{err}; then: autoannotator resume {store.root}" if store else str(err))
    _summary(store, metrics)


def _create(spec: TaskSpec, run_dir: Path, options) -> RunStore:
    """Check everything the run needs, then write its directory: a refused run leaves nothing."""
    rows = prepare_input(spec)
    preflight(spec, options)
    return RunStore.create(run_dir, spec, rows)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="A run directory from `run`."),
    hub: str = HubOpt,
    sandbox: str = SandboxOpt,
    device: str = DeviceOpt,
    llm_base_url: str = BaseUrlOpt,
    llm_api_key: str = ApiKeyOpt,
    llm_model: str = ModelOpt,
    gguf: str = GgufOpt,
    step_timeout: float = TimeoutOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Finish a run that was stopped: no finished chunk is relabeled, no LLM answer paid twice."""
    store = RunStore(run_dir)
    try:
        store.task()
        options = _options(
            hub, sandbox, device, llm_base_url, llm_api_key, llm_model, gguf, step_timeout, quiet
        )
        metrics = _execute(store, options, resume=True, quiet=quiet)
    except USER_ERRORS as err:
        fail(str(err))
    _summary(store, metrics)


@app.command()
def chat(
    run_dir: Path = typer.Option(None, "--run-dir", help="Where the first run goes."),
    hub: str = HubOpt,
    sandbox: str = SandboxOpt,
    device: str = DeviceOpt,
    llm_base_url: str = BaseUrlOpt,
    llm_api_key: str = ApiKeyOpt,
    llm_model: str = ModelOpt,
    gguf: str = GgufOpt,
    step_timeout: float = TimeoutOpt,
) -> None:
    """Describe a labeling job in plain words; confirm the task, watch it run, ask about it."""
    with ExitStack() as stack:
        model, endpoint, price = open_chat_model(
            stack, llm_base_url, llm_api_key, llm_model, gguf, console.print
        )

        @cache
        def make_options():
            options = _options(
                hub,
                sandbox,
                device,
                llm_base_url,
                llm_api_key,
                llm_model,
                gguf,
                step_timeout,
                False,
            )
            # The run's reviewer talks to the chat's LLM: one local server, not two.
            return replace(options, endpoint=endpoint)

        repl(ChatSession(console, model, make_options, run_dir=run_dir, price=price))


DEMO_DESCRIPTIONS = {
    "sentiment": "sentiment of tweets: is the author positive, negative or neutral",
    "toxicity": "toxicity of social media comments: toxic or non-toxic",
}


@app.command()
def demo(
    task: str = typer.Option("sentiment", "--task", help="sentiment or toxicity."),
    rows: int = typer.Option(600, "--rows", help="How many bundled rows to label."),
    beta: int = typer.Option(100, "--beta", help="Small so the demo shows a fine-tune cycle."),
    chunk_size: int = typer.Option(200, "--chunk-size"),
    run_dir: Path = typer.Option(None, "--run-dir"),
    sandbox: str = SandboxOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Label bundled sample data end to end with the embedded defaults (no network, no key)."""
    if task not in TASK_LABELS:
        fail(f"unknown demo task {task!r}; use one of {', '.join(TASK_LABELS)}")
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
        options = _options(None, sandbox, "auto", None, None, None, None, 3600.0, quiet)
        store = _create(spec, target, options)
        if not quiet:
            console.print(f"run directory: {store.root}", soft_wrap=True)
        metrics = _execute(store, options, resume=False, quiet=quiet)
    except USER_ERRORS as err:
        fail(str(err))
    _summary(store, metrics)


@app.command("eval")
def evaluate(
    data: Path = typer.Option(..., "--data", help="A labeled file."),
    gold_column: str = typer.Option("label", "--gold-column"),
    labels: str = typer.Option(..., "--labels"),
    task: str = typer.Option(..., "--task"),
    text_column: str = typer.Option("text", "--text-column"),
    k: str = typer.Option("3", "--k", help="Committee size; a list (2,3,4) runs a grid."),
    epsilon: float = typer.Option(None, "--epsilon"),
    beta: str = typer.Option(
        "2000", "--beta", help="Fine-tune threshold; a list (500,1000,2000) runs a grid."
    ),
    chunk_size: int = ChunkSizeOpt,
    replay_ratio: float = ReplayOpt,
    reviewers: str = typer.Option(
        "llm,oracle", "--reviewers", help="Which AutoAnnotator rows to run: llm, oracle or both."
    ),
    llm_sample: int = typer.Option(200, "--llm-sample", help="Rows the LLM labels alone."),
    run_dir: Path = typer.Option(None, "--run-dir"),
    hub: str = HubOpt,
    sandbox: str = SandboxOpt,
    device: str = DeviceOpt,
    llm_base_url: str = BaseUrlOpt,
    llm_api_key: str = ApiKeyOpt,
    llm_model: str = ModelOpt,
    gguf: str = GgufOpt,
    quiet: bool = QuietOpt,
    codegen: str = CodegenOpt,
    review_batch: str = ReviewBatchOpt,
    max_llm_calls: int = MaxCallsOpt,
    max_cost: float = MaxCostOpt,
    price_in: float = PriceInOpt,
    price_out: float = PriceOutOpt,
    label_desc: list[str] = LabelDescOpt,
    label_words: list[str] = LabelWordsOpt,
) -> None:
    """Run the pipeline on a labeled file as if unlabeled; print the paper's table 3/4 columns.

    With several values of --k or --beta, run every combination instead and write the
    paper's tables 5-6 as one grid (ablation.md and ablation.csv in the run directory).
    """
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
        k=ks[0],
        epsilon=epsilon,
        beta=betas[0],
        chunk_size=chunk_size,
        replay_ratio=replay_ratio,
        codegen=_codegen(codegen, "llm" in chosen),
        **_review_fields(
            review_batch, max_llm_calls, max_cost, price_in, price_out, label_desc, label_words
        ),
    )
    for value in ks[1:]:
        _task_or_fail(**{**base.model_dump(), "k": value})
    for value in betas[1:]:
        _task_or_fail(**{**base.model_dump(), "beta": value})
    try:
        options = _options(
            hub, sandbox, device, llm_base_url, llm_api_key, llm_model, gguf, 3600.0, quiet
        )
        with ProgressView(quiet) as view:
            options = replace(options, progress=view)
            root = _run_dir(run_dir, "eval")
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
app.add_typer(models_app, name="models")
app.add_typer(scripts_app, name="scripts")
app.add_typer(sandbox_app, name="sandbox")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover - `python -m agent.cli.app`
    main()
