"""`autoannotator models`: build the demo catalog, list what a hub offers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from agent.cli_common import HubOpt, console, fail, open_hub, out, user_errors

models_app = typer.Typer(help="Model catalogs: build the demo hub, list what a hub offers.")


@models_app.command("build-demo-hub")
def build_demo_hub_command(
    dest: Path = typer.Option(None, "--dest", help="Default: the user cache dir."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if it exists."),
) -> None:
    """Train the demo catalog: small MiniLM sentiment and toxicity classifiers (a few minutes)."""
    from agent.demo_hub import build_demo_hub

    path = build_demo_hub(dest, force=force, progress=lambda line: console.print(line))
    out.print(str(path))


@models_app.command("list")
def list_models(hub: str = HubOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the text-classification models a hub offers, with their labels."""
    try:
        models = open_hub(hub, lambda line: console.print(line)).list_models()
    except user_errors() as err:
        fail(str(err))
    if as_json:
        out.print_json(data=[{"id": m.id, "labels": m.labels, "source": m.source} for m in models])
        return
    table = Table("model", "labels", "license", "datasets")
    for m in models:
        table.add_row(m.id, ", ".join(m.labels), m.license or "-", ", ".join(m.datasets) or "-")
    out.print(table)
