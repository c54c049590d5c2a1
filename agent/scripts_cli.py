"""`autoannotator scripts RUN`: inspect the scripts a run generated and executed, re-run one."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pandas as pd
import typer
from rich.syntax import Syntax
from rich.table import Table

from agent.annotate import StepFailed, validate_votes
from agent.cli_common import UNCONFINED_HINT, fail, out, unconfined_by_surprise
from agent.runstore import RunStore, read_json

scripts_app = typer.Typer(help="Inspect the scripts a run generated and executed.")


def _manifest(store: RunStore) -> list[dict]:
    return read_json(store.scripts_dir / "manifest.json")["scripts"]


def _entry(store: RunStore, role: str, model: str | None) -> dict:
    matches = [
        e
        for e in _manifest(store)
        if e["role"] == role and (model is None or model in (e["model"], e["slug"]))
    ]
    if not matches:
        fail(f"no {role} script{' for ' + model if model else ''} in {store.root}")
    return matches[0]


@scripts_app.callback(invoke_without_command=True)
def scripts(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A run directory."),
) -> None:
    """List every script of a run: where it came from (llm or template) and how it fared."""
    store = RunStore(run_dir)
    if not (store.scripts_dir / "manifest.json").is_file():
        fail(f"{run_dir}: no scripts/manifest.json; is this a run directory that got that far?")
    ctx.obj = store
    if ctx.invoked_subcommand:
        return
    table = Table("role", "model", "origin", "status", "attempts", "path")
    for entry in _manifest(store):
        table.add_row(
            entry["role"],
            entry["model"],
            entry["origin"],
            entry["status"],
            str(entry.get("attempts", "-")),
            entry["path"],
        )
    out.print(table)


@scripts_app.command("show")
def show_script(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="deploy, annotate or finetune."),
    model: str = typer.Option(None, "--model", help="Model id or slug (default: the first)."),
    attempt: int = typer.Option(None, "--attempt", help="Show the LLM's attempt N instead."),
    diff: bool = typer.Option(False, "--diff", help="The unified diff against the template."),
) -> None:
    """Print one script with syntax highlighting, or its diff against the template."""
    from agent.codegen import render

    store: RunStore = ctx.obj
    entry = _entry(store, role, model)
    path = store.root / entry["path"]
    if attempt is not None:
        path = store.scripts_dir / role / f"attempt-{attempt}.py"
        if not path.is_file():
            fail(f"no attempt {attempt} for {role} in {store.root} (see `scripts {store.root}`)")
    code = path.read_text(encoding="utf-8")
    if not diff:
        out.print(Syntax(code, "python", line_numbers=True))
        return
    template = render(role, entry["model"], store.task())
    lines = difflib.unified_diff(
        template.splitlines(keepends=True),
        code.splitlines(keepends=True),
        fromfile=f"templates/{role}.py.j2 ({entry['model']})",
        tofile=str(path.relative_to(store.root)),
    )
    text = "".join(lines)
    out.print(Syntax(text, "diff") if text else "identical to the template")


def _latest_version(store: RunStore, slug: str) -> Path:
    versions = sorted(
        (p for p in store.model_dir(slug, 0).parent.glob("v*") if (p / "config.json").is_file()),
        key=lambda p: int(p.name[1:]),
    )
    if not versions:
        fail(f"{slug} was never deployed in {store.root}; nothing to run the script on")
    return versions[-1]


@scripts_app.command("rerun")
def rerun_script(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="deploy, annotate or finetune."),
    model: str = typer.Option(None, "--model", help="Model id or slug (default: the first)."),
    sandbox: str = typer.Option("auto", "--sandbox", help="docker, local or auto."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Run one script again into a scratch dir (annotate: chunk 0) and print what came out."""
    from agent import verify
    from agent.codegen import local_source, probe_rows
    from sandbox.base import Limits
    from sandbox.factory import make_sandbox

    store: RunStore = ctx.obj
    entry = _entry(store, role, model)
    models = {m["slug"]: m for m in read_json(store.models_path)["models"]}
    target = models[entry["slug"]]
    script = store.root / entry["path"]
    scratch = store.root / "scratch" / f"rerun-{role}-{entry['slug']}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    box = make_sandbox(sandbox, device)
    if entry["origin"] == "llm" and unconfined_by_surprise(sandbox, box):
        fail(f"{script} was written by the LLM and no Docker engine answers; {UNCONFINED_HINT}")
    limits = Limits()
    # The script writes only scratch/out; the host keeps its log beside it, outside.
    output_dir = scratch / "out"
    output_dir.mkdir()
    log = scratch / "result.json"
    try:
        if role == "annotate":
            model_dir, chunk = _latest_version(store, entry["slug"]), store.input_chunk(0)
            votes = output_dir / "votes.parquet"
            args = verify.annotate_args(model_dir, chunk, votes, store.task(), device, 0)
            result = verify.run_candidate(
                box, script, args, inputs=[model_dir, chunk], output_dir=output_dir,
                limits=limits, log=log, output=verify.VOTES_OUTPUT,
            )  # fmt: skip
            frame = validate_votes(votes, pd.read_parquet(chunk), target["labels"])
            counts = frame["label"].value_counts().to_dict()
            summary = f"{len(frame)} rows of chunk 0, labels {counts}, contract kept"
        elif role == "deploy":
            source = local_source(target["source"])
            result = verify.run_candidate(
                box, script, ["--source", str(source), "--out", str(output_dir)],
                inputs=[source], output_dir=output_dir,
                limits=limits, log=log, output=verify.MODEL_OUTPUT,
            )  # fmt: skip
            verify.check_model_dir(
                output_dir, target["labels"], source, probe_rows(store)["text"].tolist()
            )
            summary = f"deployed {target['source']}: loads, labels {target['labels']}"
        elif role == "finetune":
            model_dir = _latest_version(store, entry["slug"])
            train, gate = verify.finetune_probe(probe_rows(store), target["labels"], scratch)
            args = verify.finetune_args(model_dir, train, gate, output_dir, device, 0)
            result = verify.run_candidate(
                box, script, args, inputs=[model_dir, train, gate], output_dir=output_dir,
                limits=limits, log=log, output=verify.MODEL_OUTPUT,
            )  # fmt: skip
            metrics = verify.check_finetune_metrics(
                output_dir / "metrics.json", len(pd.read_parquet(gate))
            )
            summary = (
                f"probe accuracy {metrics['before']['accuracy']:.3f} -> "
                f"{metrics['after']['accuracy']:.3f}, loss {metrics['before']['loss']:.4f} -> "
                f"{metrics['after']['loss']:.4f} (as the script reports them)"
            )
        else:
            fail(f"unknown role {role!r}; use deploy, annotate or finetune")
    except verify.Rejected as rejected:
        if rejected.stderr:
            out.print(rejected.stderr, markup=False, highlight=False)
        fail(f"{role} ({entry['slug']}) {rejected.stage}: {rejected.reason}; output in {scratch}")
    except StepFailed as err:
        fail(f"{role} ({entry['slug']}): {err}")
    out.print(
        f"{role} ({entry['slug']}): ok in {result.duration_s:.1f}s; {summary}", soft_wrap=True
    )
    out.print(f"output: {scratch}", soft_wrap=True)
