"""The script contract: what every generated script gets and must leave behind.

Generated scripts are command-line programs the sandbox runs; this module is the one place
their command lines and their annotate output are defined and checked, and the prompts
(prompts/*.yaml) and templates (templates/*.py.j2) are written to it. The model-dir and
metrics checks of the probe live beside it in agent.scripts.verify.

- deploy: `deploy_args` below (a hub id or a local model dir, and `--out DIR`); leaves a
  `save_pretrained` classifier and its tokenizer in DIR, with the source's labels.
- annotate: `annotate_args` below; `--input` holds rows of one or more chunks (the run
  labels ahead, pipeline.annotate); writes a parquet file whose first columns are
  `id, label, score`: one row per input id, `label` in the model's own label set, `score`
  in [0, 1], no missing score; and optionally `probs`, a struct mapping every label of the
  model to its probability in [0, 1] (the templates write it; the committee's distribution
  then uses it whole instead of spreading 1 - score over the other labels). Other columns
  are dropped. It may also leave `precision.json` beside it (the template
  does): `{"precision": "fp32|int8|bf16|fp16", ...}`, which the run records
  (`read_precision`); a script that leaves none is recorded as "unreported".
- finetune: `finetune_args` below; the train set's columns are `text, label` and `weight` in
  [0, 1] (each row's share in the loss; a script may ignore it); writes a `save_pretrained`
  model into `--out` and
  `metrics.json` there: `before` and `after` objects with `accuracy` in [0, 1], a finite
  `loss` and the eval set's `rows`, plus `train_seconds`.
annotate and finetune also take `--device cpu|cuda` and `--threads N` (0: torch's default).
Each script writes only into its own output directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import Rejected, StepFailed
from agent.task import TaskSpec
from sandbox.outputs import UnsafeOutput, inspect_outputs, read_bytes_bounded

# The contract's version: bump it when an argument or an output above changes, or the shape
# of an annotate script's model section (templates/annotate_harness.py.j2: 4, load_model
# returns predict_proba), so scripts written to an older contract (agent.scripts.scriptcache)
# are neither offered again nor shown as worked examples.
CONTRACT_VERSION = 4
# An annotate output's columns the host keeps (probs optional).
VOTE_COLUMNS = ("id", "label", "score", "probs")
# What one step may leave in its output directory. Votes are a few columns per input row; a
# model directory holds weights (a few GB for the largest classifiers a hub offers).
VOTES_BYTES = 256 << 20
VOTES_OUTPUT = {"max_file_bytes": VOTES_BYTES, "max_total_bytes": VOTES_BYTES, "max_files": 16}
MODEL_OUTPUT = {"max_file_bytes": 16 << 30, "max_total_bytes": 32 << 30, "max_files": 1000}
METRICS_BYTES = 1 << 20
PRECISION_BYTES = 4096


def _command_line(**options: object) -> list[str]:
    """`--name value` pairs, in the order given; underscores in a name become dashes."""
    return [
        part
        for name, value in options.items()
        for part in (f"--{name.replace('_', '-')}", str(value))
    ]


def deploy_args(source: str, out: Path) -> list[str]:
    """The command line every deploy script gets: in the run (pipeline.nodes) and its probe."""
    return _command_line(source=source, out=out)


def annotate_args(
    model_dir: Path, input_path: Path, output_path: Path, task: TaskSpec, device: str, threads: int
) -> list[str]:
    """The command line every annotate script gets: in the run (pipeline.annotate) and its probe."""
    return _command_line(
        model=model_dir,
        input=input_path,
        output=output_path,
        batch_size=task.batch_size,
        max_length=task.max_length,
        device=device,
        threads=threads,
    )


def finetune_args(
    model_dir: Path, train: Path, gate: Path, out: Path, device: str, threads: int
) -> list[str]:
    """The command line every finetune script gets: in the run (pipeline.finetune) and its probe."""
    return _command_line(
        model=model_dir, train=train, eval=gate, out=out, device=device, threads=threads
    )


def inspect_step(directory: Path, caps: dict) -> list[Path]:
    """The step's regular files; Rejected('contract') naming what is unsafe, never its content."""
    try:
        return inspect_outputs(directory, **caps)
    except UnsafeOutput as err:
        raise Rejected("contract", f"unsafe output: {err.reason}") from None


def read_output_parquet(path: Path, limit: int = VOTES_BYTES) -> pd.DataFrame:
    """A parquet file a script wrote, read from at most `limit` bytes held in memory."""
    try:
        data = read_bytes_bounded(path, limit)
    except FileNotFoundError:
        raise Rejected(
            "contract", f"no {path.name}: the script exited 0 without writing it"
        ) from None
    except UnsafeOutput as err:
        raise Rejected("contract", f"unsafe output: {err.reason}") from None
    if not data:
        raise Rejected("contract", f"{path.name} is empty")
    try:
        return pq.read_table(pa.BufferReader(data)).to_pandas()
    except (pa.ArrowException, ValueError) as err:
        raise Rejected(
            "contract", f"{path.name} is not a parquet file ({type(err).__name__})"
        ) from None


def _probs_problem(probs: pd.Series, model_labels: list[str]) -> str | None:
    """What is wrong with an annotate output's `probs` column, or None."""
    if not all(isinstance(row, dict) for row in probs):
        return "probs must map each label to its probability (a struct column)"
    keys = set(probs.iloc[0]) if len(probs) else set(model_labels)
    if keys != set(model_labels):
        return f"probs names {sorted(keys)[:5]}, not the model's labels"
    values = pd.DataFrame(list(probs)).to_numpy(dtype=float, na_value=np.nan)
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        return "probs missing or outside [0, 1]"
    return None


def validate_votes(path: Path, chunk: pd.DataFrame, model_labels: list[str]) -> pd.DataFrame:
    """The annotate contract: one row per input id, known labels, scores in [0, 1], and where
    given a probability per label; the contract's columns only.

    `path` is a script's output in a directory inspect_step has passed."""
    try:
        votes = read_output_parquet(path)
    except Rejected as err:
        raise StepFailed(f"{path}: annotate output breaks the contract: {err.reason}") from None
    problems = []
    if list(votes.columns[:3]) != ["id", "label", "score"]:
        problems.append(f"columns are {list(votes.columns)}, expected id, label, score")
    elif len(votes) != len(chunk) or set(votes["id"]) != set(chunk["id"]):
        problems.append(f"{len(votes)} rows for {len(chunk)} inputs or ids differ")
    else:
        unknown = set(votes["label"]) - set(model_labels)
        if unknown:
            problems.append(f"labels outside the model's: {sorted(unknown)[:5]}")
        scores = votes["score"]
        if scores.isna().any() or (scores < 0).any() or (scores > 1).any():
            problems.append("scores missing or outside [0, 1]")
        if "probs" in votes.columns and (problem := _probs_problem(votes["probs"], model_labels)):
            problems.append(problem)
    if problems:
        raise StepFailed(f"{path}: annotate output breaks the contract: {'; '.join(problems)}")
    return votes[[c for c in VOTE_COLUMNS if c in votes.columns]]


class PrecisionReport(BaseModel):
    """What an annotate script says it labeled with; only these fields are kept."""

    model_config = ConfigDict(extra="ignore")

    precision: Literal["fp32", "int8", "bf16", "fp16", "unreported"]
    probe_rows: int | None = Field(default=None, ge=0)
    probe_changed: float | None = Field(default=None, ge=0, le=1)
    reason: str | None = Field(default=None, max_length=200)


def read_precision(directory: Path) -> dict:
    """The step's precision.json, checked, or `unreported` when it left none or a bad one."""
    try:
        data = read_bytes_bounded(directory / "precision.json", PRECISION_BYTES)
        report = PrecisionReport.model_validate_json(data)
    except (FileNotFoundError, UnsafeOutput, ValidationError):
        report = PrecisionReport(precision="unreported")
    return report.model_dump(exclude_none=True)
