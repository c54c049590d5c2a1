"""`autoannotator models`: build the demo catalog, list what a hub offers, search it for a task."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Column, Table

from agent.cli.common import USER_ERRORS, console, fail, open_hub, out
from agent.cli.options import (
    HubOption,
    LabelMapOption,
    LabelWordsOption,
    label_map_fields,
    label_words_field,
)
from agent.committee.selection import Candidate, Policy, Selection, choose, selection_failure
from agent.hub.demo import build_demo_hub
from agent.store.runstore import prepare_input
from agent.task import TaskSpec

models_app = typer.Typer(
    help="Model catalogs: build the demo hub, list what a hub offers, search it for a task."
)


@models_app.command("build-demo-hub")
def build_demo_hub_command(
    dest: Path = typer.Option(None, "--dest", help="Default: the user cache dir."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if it exists."),
) -> None:
    """Train the demo catalog: small MiniLM sentiment and toxicity classifiers (a few minutes)."""
    path = build_demo_hub(dest, force=force, progress=lambda line: console.print(line))
    out.print(str(path))


@models_app.command("list")
def list_models(hub: HubOption = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the text-classification models a hub offers, with their labels."""
    try:
        models = open_hub(hub, lambda line: console.print(line)).list_models()
    except USER_ERRORS as err:
        fail(str(err))
    if as_json:
        out.print_json(data=[{"id": m.id, "labels": m.labels, "source": m.source} for m in models])
        return
    table = Table("model", "labels", "license", "datasets")
    for m in models:
        table.add_row(m.id, ", ".join(m.labels), m.license or "-", ", ".join(m.datasets) or "-")
    out.print(table)


def _task(
    description: str, labels: str, k: int, data: Path | None, text_column: str, **fields
) -> TaskSpec:
    try:
        return TaskSpec(
            description=description,
            labels=labels.split(","),
            k=k,
            data_path=str(data) if data else "",
            text_column=text_column,
            **fields,
        )
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "task"
        fail(f"{where}: {first['msg'].removeprefix('Value error, ')}")
        raise  # unreachable; fail() exits


def _status(candidate: Candidate) -> str:
    if candidate.chosen:
        return f"[green]chosen[/]{f' ({candidate.note})' if candidate.note else ''}"
    if candidate.rejected:
        return f"[red]rejected:[/] {escape(candidate.rejected)}"
    return f"[dim]{escape(candidate.note or '')}[/]"


def _size(size_bytes: int | None) -> str:
    return f"{size_bytes / 1e6:,.0f} MB" if size_bytes is not None else "size ?"


def _mapping(candidate: Candidate) -> str:
    """`NEG→negative`, a label that is already a task label as itself, `?` where none fits."""
    return ", ".join(
        model_label if model_label == task_label else f"{model_label}→{task_label or '?'}"
        for model_label, task_label in candidate.alignment.mapping.items()
    )


def _smoke(candidate: Candidate) -> str:
    smoke = candidate.smoke
    if smoke is None:
        return "-"
    if smoke.error:
        return "crashed"
    shares = ", ".join(f"{label} {share:.0%}" for label, share in smoke.label_share.items())
    if smoke.distance is not None and smoke.reference:
        against = "gold" if smoke.reference.startswith("the gold") else "the others"
        shares += f"; {smoke.distance:.2f} from {against}"
    probes = f"; probes {smoke.probes.correct}/{smoke.probes.total}" if smoke.probes.total else ""
    return shares + probes


def _table(selection: Selection) -> Table:
    table = Table(
        Column("model", overflow="fold"),
        "score",
        "sim · fit · pop",
        "size · licence",
        "labels → task",
    )
    if selection.sample_rows:
        table.add_column(f"answers on {selection.sample_rows} rows")
    table.add_column("status")
    for c in selection.ranked:
        parts = c.score_parts
        row = [
            escape(c.model.id),
            f"{c.score:.3f}",
            f"{parts['similarity']:.2f} · {parts['label_fit']:.2f} · {parts['popularity']:.2f}",
            escape(f"{_size(c.model.size_bytes)} · {c.model.license or 'licence ?'}"),
            escape(_mapping(c)),
        ]
        if selection.sample_rows:
            row.append(escape(_smoke(c)))
        table.add_row(*row, _status(c))
    return table


@models_app.command("search")
def search_models(
    task: str = typer.Argument(..., help="What to label, in plain words."),
    labels: str = typer.Option(..., "--labels", help="Task labels, comma-separated."),
    hub: HubOption = None,
    k: int = typer.Option(3, "--k", help="How many models the committee needs."),
    data: Path = typer.Option(
        None, "--data", help="Smoke-test candidates on up to 50 rows of this file."
    ),
    text_column: str = typer.Option("text", "--text-column"),
    gold_column: str = typer.Option(
        None,
        "--gold-column",
        help="Known labels in --data: the smoke test compares each model's labels with them "
        "(default: with the other candidates' votes).",
    ),
    licenses: str = typer.Option(
        None, "--licenses", help="Allowed licence ids, comma-separated. Default: any."
    ),
    max_size_mb: float = typer.Option(
        Policy.max_size_bytes / 1e6, "--max-size-mb", help="Weights size budget per model."
    ),
    label_map: LabelMapOption = None,
    label_words: LabelWordsOption = None,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Rank a hub's models for a task (eq. 1 + label fit + popularity), validate the top ones on
    your data, and show the committee of k that `run` would pick, with every rejection's reason."""
    spec = _task(
        task,
        labels,
        k,
        data,
        text_column,
        gold_column=gold_column,
        label_words=label_words_field(label_words),
        **label_map_fields(label_map),
    )
    policy = Policy(
        max_size_bytes=int(max_size_mb * 1e6),
        licenses=frozenset(x.strip() for x in licenses.split(",")) if licenses else None,
    )
    try:
        rows = prepare_input(spec) if data else None
        texts = rows["text"].tolist() if rows is not None else None
        gold = rows["gold"].tolist() if rows is not None and "gold" in rows else None
        opened = open_hub(hub, lambda line: console.print(line))
        hub_name = opened.name
        selection = choose(opened, spec, texts, gold=gold, policy=policy)
    except USER_ERRORS as err:
        fail(str(err))
    if as_json:
        out.print_json(
            data={
                "task": spec.description,
                "labels": spec.labels,
                "k": spec.k,
                "chosen": [c.model.id for c in selection.chosen],
                "sample_rows": selection.sample_rows,
                "teacher_rows": selection.teacher_rows,
                "expected_escalation": selection.expected_escalation,
                "seconds": round(selection.seconds, 2),
                "candidates": [c.to_json() for c in selection.ranked],
            }
        )
    else:
        out.print(_table(selection))
        if selection.expected_escalation is not None:
            out.print(
                f"expected escalation: {selection.expected_escalation:.0%} of "
                f"{selection.sample_rows} sample rows would go to review "
                f"(k={spec.k}, ε={spec.routing_threshold:.2f})"
            )
        out.print(f"selection took {selection.seconds:.1f} s")
    if selection.short:
        # The table above shows every reason: the one line says what would fix it.
        fail(selection_failure(selection, spec, hub_name, policy).summary, code=1)
