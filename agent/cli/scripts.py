"""`autoannotator scripts RUN`: inspect the scripts a run generated and executed, re-run one."""

from __future__ import annotations

import difflib
from pathlib import Path

import typer
from rich.syntax import Syntax
from rich.table import Table

from agent.cli.common import UNCONFINED_HINT, fail, out, unconfined_by_surprise
from agent.cli.options import DeviceOption, SandboxOption, open_sandbox
from agent.domain import ModelKind
from agent.errors import Rejected, StepFailed, UserError
from agent.pipeline.runner import resolve_device
from agent.scripts.codegen import render
from agent.scripts.rerun import rerun, rerun_dir
from agent.scripts.verify import template_file
from agent.store.runstore import RunStore, read_json
from sandbox.base import SandboxError

scripts_app = typer.Typer(help="Inspect the scripts a run generated and executed.")


def _manifest(store: RunStore) -> list[dict]:
    return read_json(store.scripts_manifest_path)["scripts"]


def _entry(store: RunStore, role: str, model: str | None) -> dict:
    matches = [
        e
        for e in _manifest(store)
        if e["role"] == role and (model is None or model in (e["model"], e["slug"]))
    ]
    if not matches:
        fail(f"no {role} script{' for ' + model if model else ''} in {store.root}")
    return matches[0]


def _origin(entry: dict) -> str:
    """template, llm (attempt N), or cache (the run it passed in and the model it was for)."""
    if entry["origin"] == "cache":
        return f"cache from run {entry['from_run']} ({entry['written_for']})"
    if entry["origin"] == "llm":
        return f"llm, attempt {entry['attempts']}"
    return entry["origin"]


@scripts_app.callback(invoke_without_command=True)
def scripts(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A run directory."),
) -> None:
    """List every script of a run: who wrote it (template or llm), how it fared and why."""
    store = RunStore(run_dir)
    if not (store.scripts_dir / "manifest.json").is_file():
        fail(f"{run_dir}: no scripts/manifest.json; is this a run directory that got that far?")
    ctx.obj = store
    if ctx.invoked_subcommand:
        return
    table = Table("role", "model", "origin", "status", "attempts", "why", "path")
    for entry in _manifest(store):
        table.add_row(
            entry["role"],
            entry["model"],
            _origin(entry),
            entry["status"],
            str(entry.get("attempts", "-")),
            entry.get("why", ""),
            entry["path"],
        )
    out.print(table)


@scripts_app.command("show")
def show_script(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="deploy, annotate or finetune."),
    model: str = typer.Option(None, "--model", help="Model id or slug (default: the first)."),
    attempt: int = typer.Option(None, "--attempt", help="Show the LLM's attempt N instead."),
    diff: bool = typer.Option(
        False,
        "--diff",
        help="The unified diff against its reference: the worked example the LLM was shown, "
        "else the template.",
    ),
) -> None:
    """Print one script with syntax highlighting, or its diff against its reference."""
    store: RunStore = ctx.obj
    entry = _entry(store, role, model)
    path = store.path(entry["path"])
    if attempt is not None:
        # --codegen auto keeps a model's attempts beside each other, in scripts/<role>/<slug>/.
        attempts = store.path(entry.get("from_attempt") or entry["path"]).parent
        path = attempts / f"attempt-{attempt}.py"
        if not path.is_file():
            fail(f"no attempt {attempt} for {role} in {store.root} (see `scripts {store.root}`)")
    code = path.read_text(encoding="utf-8")
    if not diff:
        out.print(Syntax(code, "python", line_numbers=True))
        return
    if entry.get("reference"):
        name, reference = entry["reference"], store.path(entry["reference"]).read_text("utf-8")
    else:
        kind = entry.get("kind", ModelKind.SEQUENCE_CLASSIFICATION)
        name = f"{template_file(role, kind)} ({entry['model']})"
        reference = render(role, entry["model"], store.task(), kind)
    lines = difflib.unified_diff(
        reference.splitlines(keepends=True),
        code.splitlines(keepends=True),
        fromfile=name,
        tofile=store.relative(path),
    )
    text = "".join(lines)
    out.print(Syntax(text, "diff") if text else f"identical to {name}")


@scripts_app.command("rerun")
def rerun_script(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="deploy, annotate or finetune."),
    model: str = typer.Option(None, "--model", help="Model id or slug (default: the first)."),
    sandbox: SandboxOption = "auto",
    device: DeviceOption = "auto",
) -> None:
    """Run one script again into a scratch dir (annotate: chunk 0) and print what came out."""
    store: RunStore = ctx.obj
    entry = _entry(store, role, model)
    try:
        # Not the run's sandbox (run_id): opening that would remove the containers of a run
        # still going.
        box = open_sandbox(sandbox, device)
    except SandboxError as err:
        fail(str(err))
    if entry["origin"] == "llm" and unconfined_by_surprise(sandbox, box):
        script = store.path(entry["path"])
        fail(f"{script} was written by the LLM and no Docker engine answers; {UNCONFINED_HINT}")
    try:
        done = rerun(store, entry, box, resolve_device(device, box))
    except Rejected as rejected:
        if rejected.stderr:
            out.print(rejected.stderr, markup=False, highlight=False)
        where = rerun_dir(store, role, entry["slug"])
        fail(f"{role} ({entry['slug']}) {rejected.stage}: {rejected.reason}; output in {where}")
    except StepFailed as err:
        fail(f"{role} ({entry['slug']}): {err}")
    except UserError as err:
        fail(str(err))
    out.print(
        f"{role} ({entry['slug']}): ok in {done.result.duration_s:.1f}s; {done.summary}",
        soft_wrap=True,
    )
    out.print(f"output: {done.scratch}", soft_wrap=True)
