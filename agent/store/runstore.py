"""The run directory: the single source of truth of a labeling run.

Every file is written atomically (temp file + rename), so a run killed at any instant leaves
each file either whole or absent, and a resumed run can trust whatever it finds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from agent.domain import OUTPUT_COLUMNS, CommitteeMember, output_name
from agent.errors import UserError
from agent.task import TaskSpec

log = logging.getLogger(__name__)

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


# A text is cut to this many characters when the run's rows are prepared. Far past what any
# classifier reads (max_length is at most 4096 tokens) and what a review prompt needs, yet it
# bounds every later step: one 50 MB text held 5-6.7 GB in selection's tokenizer (outside any
# sandbox) and ~6.3 GB in each annotate script.
MAX_TEXT_CHARS = 20_000


class InputError(UserError, ValueError):
    """A mistake in what the user gave us; the message says what and how to fix it."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; it replaces `path` only if the block succeeds.

    Never through a link a script may have planted: mkstemp creates the temp file with
    O_CREAT|O_EXCL|O_NOFOLLOW, and os.replace swaps a symlink at `path` for the file instead of
    writing where it points.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_json(data: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _check_utf8(path: Path) -> None:
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[err.start]:02x}); "
            "re-save the file as UTF-8"
        ) from None


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL/parquet file, turning every user mistake into an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; check the --data path")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path}: unsupported file type {path.suffix!r}; use .csv, .tsv, .jsonl or .parquet"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; it needs a header and at least one row")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            _check_utf8(path)
            if kind == "jsonl":
                frame = pd.read_json(path, lines=True, dtype=False)
            else:
                sep = "\t" if kind == "tsv" else ","
                # A blank line is an empty text to report as skipped, never a row to drop.
                frame = pd.read_csv(
                    path,
                    sep=sep,
                    dtype=str,
                    keep_default_na=False,
                    na_values=[""],
                    skip_blank_lines=False,
                )
    except InputError:
        raise
    except (ValueError, pd.errors.ParserError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: cannot be read as {kind} ({first}); fix the file") from None
    if frame.empty:
        raise InputError(f"{path}: has a header but no rows; nothing to label")
    return frame


def read_input(task: TaskSpec) -> pd.DataFrame:
    """The user's file as the run keeps it (source.parquet) and gives it back in labels.*: every
    column, named as a string. A column named like one the run adds, or one parquet cannot
    store, is refused here, before anything is written."""
    path = Path(task.data_path)
    frame = read_table(path)
    frame.columns = [str(c) for c in frame.columns]
    for column in frame.columns:
        if column in {output_name(c) for c in OUTPUT_COLUMNS}:
            raise InputError(
                f"{path}: column {column!r} has the name of one the run adds to labels.*; "
                "rename it (the run's columns all start with "
                f"{output_name('')!r})"
            )
        try:
            pa.array(frame[column], from_pandas=True)
        except pa.ArrowException:
            raise InputError(
                f"{path}: column {column!r} mixes kinds of values (numbers and text, say), "
                "which the labels file cannot keep as given; make it one kind"
            ) from None
    return frame


def prepare_input(task: TaskSpec, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The user's rows (`frame`, else read_input's) as `row, id, text` plus the oracle column;
    every row is kept."""
    path = Path(task.data_path)
    frame = read_input(task) if frame is None else frame
    columns = list(frame.columns)
    for flag, column in (
        ("--text-column", task.text_column),
        ("--id-column", task.id_column),
        ("--gold-column / --reviewer oracle:", task.gold_source),
    ):
        if column is not None and column not in columns:
            raise InputError(
                f"{path}: no column {column!r} (columns: {', '.join(columns)}); "
                f"pass the right name with {flag}"
            )
    out = pd.DataFrame({"row": range(len(frame))})
    if task.id_column:
        ids = frame[task.id_column]
        if ids.isna().any():
            bad = int(ids.isna().to_numpy().nonzero()[0][0])
            raise InputError(f"{path}: row {bad + 1} has no {task.id_column!r}; every id is needed")
        ids = ids.astype(str)
        dup = ids[ids.duplicated()]
        if not dup.empty:
            raise InputError(
                f"{path}: id {dup.iloc[0]!r} appears more than once in {task.id_column!r}; "
                "ids must be unique"
            )
        out["id"] = ids.to_numpy()
    else:
        out["id"] = out["row"].astype(str)
    texts = [
        None
        if (t is None or (isinstance(t, float) and pd.isna(t)) or not str(t).strip())
        else str(t)
        for t in frame[task.text_column]
    ]
    # The row is kept and flagged (the flag reaches labels.*), never dropped or refused.
    out["text"] = [t if t is None else t[:MAX_TEXT_CHARS] for t in texts]
    out["truncated"] = [t is not None and len(t) > MAX_TEXT_CHARS for t in texts]
    cut = int(out["truncated"].sum())
    if cut:
        log.warning(
            "%s: %d text(s) longer than %d characters cut to that length (column truncated "
            "in labels.*)",
            path,
            cut,
            MAX_TEXT_CHARS,
        )
    if task.gold_source:
        gold = frame[task.gold_source].astype("string")
        unknown = gold.notna() & ~gold.isin(task.labels)
        if unknown.any():
            # Row numbers as a spreadsheet shows them: 1 is the first data row.
            first = int(np.flatnonzero(unknown.to_numpy())[0])
            raise InputError(
                f"{path}: row {first + 1} of column {task.gold_source!r} holds "
                f"{gold.iloc[first]!r}, not one of the task's labels ({', '.join(task.labels)}); "
                f"fix the column or --labels"
            )
        out["gold"] = gold.to_numpy()
        known = np.flatnonzero(gold.notna().to_numpy())
        rng = np.random.default_rng(task.seed)
        chosen = rng.choice(known, size=round(len(known) * task.gold_evidence), replace=False)
        out["evidence"] = np.isin(np.arange(len(out)), chosen)
    return out


class RunStore:
    """Paths and typed reads/writes of one run directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # ---- layout -------------------------------------------------------------------------
    task_path = property(lambda self: self.root / "task.json")
    input_path = property(lambda self: self.root / "input.parquet")
    # The user's file as given, every column (read_input), returned in labels.*.
    source_path = property(lambda self: self.root / "source.parquet")
    models_path = property(lambda self: self.root / "models.json")
    scripts_dir = property(lambda self: self.root / "scripts")
    steps_dir = property(lambda self: self.root / "steps")
    labels_path = property(lambda self: self.root / "labels.parquet")
    labels_csv_path = property(lambda self: self.root / "labels.csv")
    needs_review_path = property(lambda self: self.root / "needs_review.csv")
    ledger_path = property(lambda self: self.root / "ledger.jsonl")
    llm_cache_path = property(lambda self: self.root / "llm_cache.sqlite")
    batch_jobs_dir = property(lambda self: self.root / "batches")  # Batch API jobs in flight
    checkpoints_path = property(lambda self: self.root / "checkpoints.sqlite")
    report_path = property(lambda self: self.root / "report.md")
    metrics_path = property(lambda self: self.root / "metrics.json")
    timings_path = property(lambda self: self.root / "timings.jsonl")
    hard_dir = property(lambda self: self.root / "hard")
    posterior_path = property(lambda self: self.root / "trust" / "posterior.parquet")
    reliability_path = property(lambda self: self.root / "trust" / "reliability.json")
    plots_dir = property(lambda self: self.root / "plots")
    capped_path = property(lambda self: self.root / "committee_capped.csv")
    # The run's texts as sentence embeddings, each computed once (agent.pipeline.shots).
    embeddings_path = property(lambda self: self.root / "embeddings.npz")
    human_answers_path = property(lambda self: self.root / "human" / "answers.json")
    scripts_manifest_path = property(lambda self: self.root / "scripts" / "manifest.json")
    # The engine the run's annotate steps last ran on (pipeline.engine): resume reuses it.
    engine_path = property(lambda self: self.root / "engine.json")

    @property
    def run_id(self) -> str:
        """Names what the run owns outside its directory (its sandbox's Docker containers):
        the directory's name and a hash of its absolute path, so runs of the same name in
        other folders never share it, and it is known before the directory is created."""
        where = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return f"{self.root.name}-{where}"

    def path(self, relative: str | Path) -> Path:
        """A path the run recorded relative to its root (a manifest entry's script)."""
        return self.root / relative

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def script_path(self, role: str, slug: str) -> Path:
        return self.scripts_dir / role / f"{slug}.py"

    def scratch_dir(self, name: str) -> Path:
        """Where step `name` writes before the host checks it (not created here)."""
        return self.root / "scratch" / name

    def finetune_dir(self, cycle: int) -> Path:
        return self.root / "finetune" / f"cycle-{cycle:03d}"

    def finetune_records(self) -> list[Path]:
        return sorted((self.root / "finetune").glob("cycle-*/cycle.json"))

    def hard_chunks(self) -> list[Path]:
        return sorted(self.hard_dir.glob("*.parquet"))

    def audit_chunk(self, chunk: int) -> Path:
        return self.root / "audit" / f"{chunk:06d}.parquet"

    def audit_chunks(self) -> list[Path]:
        return sorted((self.root / "audit").glob("*.parquet"))

    def voted_chunks(self) -> list[Path]:
        return sorted((self.root / "chunks").glob("*.parquet"))

    def input_chunk(self, chunk: int) -> Path:
        return self.root / "inputs" / f"{chunk:06d}.parquet"

    def model_votes(self, slug: str, chunk: int) -> Path:
        return self.root / "votes" / slug / f"{chunk:06d}.parquet"

    def ahead_input(self, chunk: int) -> Path:
        """The rows from chunk `chunk`'s first on that an annotate step labels in one go."""
        return self.root / "ahead" / "inputs" / f"{chunk:06d}.parquet"

    def ahead_votes(self, slug: str, version: int, chunk: int) -> Path:
        """Version `version`'s checked votes on ahead_input(chunk), written by the host."""
        return self.root / "ahead" / slug / f"v{version}" / f"{chunk:06d}.parquet"

    def shards_dir(self, chunk: int, shard_rows: int) -> Path:
        """Where a Ray engine keeps ahead_input(chunk) cut into shards of `shard_rows` rows and
        each model version's checked votes per shard (named by the cut, so that a resume with
        another shard size never mixes the two)."""
        return self.root / "shards" / f"{chunk:06d}" / f"{shard_rows}-rows"

    def ahead_votes_files(self, slug: str, version: int) -> list[Path]:
        return sorted((self.root / "ahead" / slug / f"v{version}").glob("*.parquet"))

    def chunk_votes(self, chunk: int) -> Path:
        return self.root / "chunks" / f"{chunk:06d}.parquet"

    def hard_chunk(self, chunk: int) -> Path:
        return self.root / "hard" / f"{chunk:06d}.parquet"

    def shots_chunk(self, chunk: int) -> Path:
        """The ids of the examples chunk `chunk`'s reviews showed (the fixed shot layout)."""
        return self.root / "shots" / f"{chunk:06d}.json"

    def model_dir(self, slug: str, version: int) -> Path:
        return self.root / "models" / slug / f"v{version}"

    # ---- lifecycle ----------------------------------------------------------------------
    @staticmethod
    def check_free(root: Path) -> None:
        """Refuse a run directory that holds anything: it is another run's."""
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise InputError(
                f"{root}: run directory already exists; resume it with "
                f"`autoannotator resume {root}` or choose another --run-dir"
            )

    @classmethod
    def create(
        cls, root: Path, task: TaskSpec, rows: pd.DataFrame, source: pd.DataFrame | None = None
    ) -> RunStore:
        """Write task.json, input.parquet, the user's file as given (`source`, when there is
        one) and the input chunks, all or nothing."""
        root = Path(root)
        cls.check_free(root)
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        store = cls(partial)
        try:
            partial.mkdir(parents=True)
            task.save(store.task_path)
            rows.to_parquet(store.input_path, index=False)
            if source is not None:
                source.to_parquet(store.source_path, index=False)
            (partial / "inputs").mkdir()
            # Only the first chunk is cut now (selection smoke-tests on it); pipeline.chunking
            # sizes the others from the escalation it observes.
            if store.n_labelable():
                store.cut_chunk(0, task.chunk_size)
            if root.exists():
                root.rmdir()
            partial.rename(root)
        except OSError as err:
            # A read-only folder, a path through a regular file, a full disk: the user's to fix.
            shutil.rmtree(partial, ignore_errors=True)
            raise InputError(
                f"{root}: cannot write the run directory ({err.strerror or err}); "
                "choose another --run-dir"
            ) from None
        return cls(root)

    def task(self) -> TaskSpec:
        if not self.task_path.is_file():
            raise InputError(f"{self.root}: not a run directory (no task.json)")
        return TaskSpec.load(self.task_path)

    def committee(self) -> list[CommitteeMember]:
        """The chosen SLMs, in the order they vote (models.json `models`)."""
        return [CommitteeMember.from_dict(m) for m in read_json(self.models_path)["models"]]

    def write_committee(self, members: Sequence[CommitteeMember]) -> None:
        """Replace models.json's `models` with `members`; the models considered stay."""
        data = read_json(self.models_path)
        data["models"] = [m.to_dict() for m in members]
        write_json(data, self.models_path)

    def n_chunks(self) -> int:
        """Chunks cut so far; once the run is finished, all of them."""
        return len(list((self.root / "inputs").glob("*.parquet")))

    def labelable(self) -> pd.DataFrame:
        """The rows the committee labels (non-empty texts), in input order, as id, text."""
        rows = pd.read_parquet(self.input_path, columns=["id", "text"])
        return rows[rows["text"].notna()].reset_index(drop=True)

    def n_labelable(self) -> int:
        return len(self.labelable())

    def chunk_rows(self, chunk: int) -> int:
        return pq.ParquetFile(self.input_chunk(chunk)).metadata.num_rows

    def rows_left(self, chunk: int) -> int:
        """Labelable rows not in any chunk before `chunk`."""
        return self.n_labelable() - sum(self.chunk_rows(c) for c in range(chunk))

    def cut_chunk(self, chunk: int, size: int) -> Path:
        """Write inputs/<chunk>.parquet: the next `size` rows after chunks 0..chunk-1.

        A chunk is cut once; its file then fixes its rows for good, so a resume never re-splits.
        """
        path = self.input_chunk(chunk)
        if path.is_file():
            return path
        if chunk and not self.input_chunk(chunk - 1).is_file():
            raise RuntimeError(f"chunk {chunk} cut before chunk {chunk - 1}")
        start = sum(self.chunk_rows(c) for c in range(chunk))
        write_parquet(self.labelable().iloc[start : start + size], path)
        return path

    def rows_from(self, chunk: int, limit: int) -> pd.DataFrame:
        """At most `limit` labelable rows (id, text), from the first row of chunk `chunk` on:
        that chunk's rows, then those later chunks will hold, in the order they are cut."""
        start = sum(self.chunk_rows(c) for c in range(chunk))
        return self.labelable().iloc[start : start + limit].reset_index(drop=True)

    def rows(self) -> pd.DataFrame:
        return pd.read_parquet(self.input_path)

    def source(self) -> pd.DataFrame:
        """The user's columns, row for row with rows(). A run created before source.parquet
        was kept gives back what it has: the text column, and the id column if one was named."""
        if self.source_path.is_file():
            return pd.read_parquet(self.source_path)
        task, rows = self.task(), self.rows()
        kept = {task.text_column: rows["text"]}
        if task.id_column:
            kept[task.id_column] = rows["id"]
        return pd.DataFrame(kept)

    def gold_evidence(self) -> pd.Series:
        """The user's known labels the run learns from (`--gold-column`): id -> label."""
        rows = self.rows()
        if "evidence" not in rows:
            return pd.Series(dtype=str)
        rows = rows[rows["evidence"].fillna(False).astype(bool) & rows["gold"].notna()]
        return rows.set_index("id")["gold"].astype(str)

    def log_timing(self, stage: str, seconds: float, **extra: object) -> None:
        with self.timings_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"stage": stage, "seconds": round(seconds, 4), **extra}) + "\n")

    def timings(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        if self.timings_path.is_file():
            for line in self.timings_path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the last line of a run killed mid-write
                    continue
                totals[entry["stage"]] = totals.get(entry["stage"], 0.0) + entry["seconds"]
        return totals
