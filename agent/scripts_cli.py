"""`autoannotator scripts RUN`: inspect the scripts a run generated and executed."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from agent.cli_common import fail, out
from agent.runstore import RunStore

scripts_app = typer.Typer(help="Inspect the scripts a run generated and executed.")


@scripts_app.callback(invoke_without_command=True)
def scripts(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A run directory."),
) -> None:
    """List every script of a run with where it came from."""
    store = RunStore(run_dir)
    manifest = store.scripts_dir / "manifest.json"
    if not manifest.is_file():
        fail(f"{run_dir}: no scripts/manifest.json; is this a run directory that got that far?")
    ctx.obj = store
    if ctx.invoked_subcommand:
        return
    table = Table("role", "model", "origin", "status", "path")
    for entry in json.loads(manifest.read_text(encoding="utf-8"))["scripts"]:
        table.add_row(
            entry["role"], entry["model"], entry["origin"], entry["status"], entry["path"]
        )
    out.print(table)


@scripts_app.command("show")
def show_script(
    ctx: typer.Context,
    role: str = typer.Argument(..., help="deploy, annotate or finetune."),
    model: str = typer.Option(None, "--model", help="Model id or slug (default: the first)."),
) -> None:
    """Print one script with syntax highlighting."""
    from rich.syntax import Syntax

    store: RunStore = ctx.obj
    entries = json.loads((store.scripts_dir / "manifest.json").read_text(encoding="utf-8"))
    matches = [
        e
        for e in entries["scripts"]
        if e["role"] == role and (model is None or model in (e["model"], e["slug"]))
    ]
    if not matches:
        fail(f"no {role} script{' for ' + model if model else ''} in {store.root}")
    code = (store.root / matches[0]["path"]).read_text(encoding="utf-8")
    out.print(Syntax(code, "python", line_numbers=True))
