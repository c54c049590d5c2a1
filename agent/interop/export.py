"""`autoannotator export`: a run's labels in the formats labeling teams already use.

Every format holds the same table: the user's columns as given, then the run's `aa_` columns
(agent.domain.OUTPUT_COLUMNS), one row per input row labeled so far; a finished run's rows
all, the rows under --min-confidence included (Label Studio is where people take those).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from agent.errors import UserError
from agent.interop import hf_dataset, label_studio
from agent.pipeline.report import assemble_labels, labels_table
from agent.store.runstore import RunStore, atomic_path, write_parquet

FORMATS = ("label-studio", "hf", "jsonl", "csv", "parquet")
# Where each format goes in the run directory unless --out says otherwise.
DEFAULT_TARGETS = {
    "label-studio": "export/label-studio",
    "hf": "export/hf-dataset",
    "jsonl": "export/labels.jsonl",
    "csv": "export/labels.csv",
    "parquet": "export/labels.parquet",
}


def export_table(store: RunStore) -> pd.DataFrame:
    """The run's rows labeled so far, as labels.* hold them (the user's columns, then `aa_`)."""
    store.task()  # a folder that is not a run fails here, in one line
    if not store.voted_chunks():
        raise UserError(f"{store.root}: no row is labeled yet; run or resume it first")
    return labels_table(store, assemble_labels(store, store.committee(), partial=True))


def export_run(
    store: RunStore, fmt: str, out: Path | None = None, push_to_hub: str | None = None
) -> dict:
    """Write the run's labels as `fmt` to `out` (default: under <run>/export/); `push_to_hub`
    (hf only) uploads the dataset and its card to that Hub repository. Returns what was
    written: {"format", "rows", "paths": [...], "hub": repo or None}."""
    if fmt not in FORMATS:
        raise UserError(f"--format takes {', '.join(FORMATS)}, not {fmt!r}")
    if push_to_hub and fmt != "hf":
        raise UserError("--push-to-hub needs --format hf")
    table = export_table(store)
    target = Path(out) if out else store.root / DEFAULT_TARGETS[fmt]
    if fmt == "label-studio":
        paths = label_studio.write_project(store, table, target)
    elif fmt == "hf":
        paths = hf_dataset.write_dataset(store, table, target, push_to_hub)
    else:
        write_table(table, fmt, target)
        paths = [target]
    return {"format": fmt, "rows": len(table), "paths": [str(p) for p in paths], "hub": push_to_hub}


def write_table(table: pd.DataFrame, fmt: str, path: Path) -> None:
    if fmt == "parquet":
        write_parquet(table, path)
        return
    with atomic_path(path) as tmp:
        if fmt == "csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_json(tmp, orient="records", lines=True, force_ascii=False)
