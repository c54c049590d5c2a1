"""`autoannotator export` and `autoannotator import`: a run's labels out to the tools labeling
teams use (Label Studio, Hugging Face datasets, plain files) and people's answers back in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from huggingface_hub.errors import HfHubHTTPError

from agent.cli.common import USER_ERRORS, fail, out
from agent.interop.export import FORMATS, export_run
from agent.interop.label_studio import import_answers
from agent.pipeline.report import refresh_outputs
from agent.pipeline.runner import is_finished
from agent.store.runstore import RunStore

RunDirArgument = Annotated[Path, typer.Argument(help="A run directory from `run`.")]


def export(
    run_dir: RunDirArgument,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help=f"{', '.join(FORMATS)}: a Label Studio project (tasks.json with a prediction "
            "per row, config.xml), a Hugging Face dataset (save_to_disk, dataset card), or the "
            "labels as one file.",
        ),
    ],
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write (default: under RUN/export/)."),
    ] = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            help="With --format hf: also push the dataset and its card to this Hub dataset "
            "repository (token: HF_TOKEN or `hf auth login`).",
        ),
    ] = None,
) -> None:
    """Write a run's labels for Label Studio, Hugging Face datasets, or as jsonl/csv/parquet."""
    try:
        written = export_run(RunStore(run_dir), fmt, out_path, push_to_hub)
    except USER_ERRORS as err:
        fail(str(err))
    except HfHubHTTPError as err:
        fail(f"the Hub refused the push to {push_to_hub}: {str(err).splitlines()[0]}")
    out.print(f"{written['rows']} rows as {fmt}:", soft_wrap=True)
    for path in written["paths"]:
        out.print(f"  {path}", soft_wrap=True)
    if written["hub"]:
        out.print(f"pushed to the Hub: {written['hub']}", soft_wrap=True)


def import_(
    run_dir: RunDirArgument,
    file: Annotated[Path, typer.Argument(help="A Label Studio JSON export of the project.")],
) -> None:
    """Read a Label Studio JSON export back: its answers become human labels of the run."""
    store = RunStore(run_dir)
    try:
        counts = import_answers(store, file)
    except USER_ERRORS as err:
        fail(str(err))
    out.print(
        f"{counts['answered']} human answers saved ({counts['unchanged']} already there, "
        f"{counts['gold']} on gold rows kept as given, {counts['not_labeled_yet']} on rows the "
        "run has not reviewed yet)",
        soft_wrap=True,
    )
    if is_finished(store):
        if counts["answered"]:
            refresh_outputs(store)
            out.print(f"labels and report updated: {store.report_path}", soft_wrap=True)
    else:
        out.print(f"continue the run with: autoannotator resume {store.root}", soft_wrap=True)
