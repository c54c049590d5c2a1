"""Is a generated script safe to run and does it keep the script contract? Checks for codegen.

A candidate is read before it runs (`static_check`: it parses, it imports and calls nothing its
role may not use), then run in the sandbox on a probe, and its output is checked: the files and
columns the contract names, and a canary whose answer is known (the template's labels on the same
rows, the model's own label set). The static check is defence in depth, not the wall: a script
can always hide a call from the ast, which is why it still runs only inside the sandbox.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from agent.runstore import write_json
from agent.task import TaskSpec
from sandbox.base import Limits, Result, Sandbox
from sandbox.outputs import UnsafeOutput, inspect_outputs, read_bytes_bounded

# Nothing a classifier script needs: processes, raw sockets, foreign code, dynamic imports.
BANNED_MODULES = frozenset(
    {"socket", "subprocess", "ctypes", "pty", "importlib", "builtins", "paramiko", "pexpect"}
)
# The network: only deploy may fetch, and only through a sandbox that allows it.
NETWORK_MODULES = frozenset(
    {
        "requests", "urllib", "urllib3", "http", "httpx", "aiohttp", "ssl", "asyncio",
        "ftplib", "smtplib", "telnetlib", "websocket", "websockets", "huggingface_hub",
    }
)  # fmt: skip
BANNED_CALLS = frozenset(
    {"eval", "exec", "__import__", "os.system", "os.popen", "os.fork", "os.forkpty", "os.kill",
     "os.killpg", "shutil.rmtree"}
)  # fmt: skip
BANNED_CALL_PREFIXES = ("os.exec", "os.spawn", "os.posix_spawn")
# Any one of these means a tokenizer was saved (fast, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
    "tokenizer.model",
)  # fmt: skip
# A probe run of a generated annotate script may take this many times the template's.
SPEED_FACTOR = 5.0
# What one step may leave in its output directory. Votes are a few columns per input row; a
# model directory holds weights (a few GB for the largest classifiers a hub offers).
VOTES_BYTES = 256 << 20
VOTES_OUTPUT = {"max_file_bytes": VOTES_BYTES, "max_total_bytes": VOTES_BYTES, "max_files": 16}
MODEL_OUTPUT = {"max_file_bytes": 16 << 30, "max_total_bytes": 32 << 30, "max_files": 1000}
METRICS_BYTES = 1 << 20


class Rejected(Exception):
    """A candidate failed a check; `stage` says which, `stderr` is its error output if it ran."""

    def __init__(self, stage: str, reason: str, stderr: str = "") -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.stderr = stderr


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _banned_name(name: str) -> bool:
    return name in BANNED_CALLS or name.startswith(BANNED_CALL_PREFIXES)


def static_check(code: str, role: str) -> None:
    """Raise Rejected('static') unless `code` parses and stays within what `role` may use."""
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise Rejected("static", f"not valid Python: {err.msg} (line {err.lineno})") from None
    banned_modules = BANNED_MODULES | (frozenset() if role == "deploy" else NETWORK_MODULES)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            names = []
        problems += [
            f"line {node.lineno}: imports {name}"
            for name in names
            if name.split(".")[0] in banned_modules or _banned_name(name)
        ]
        # Only reads count: a dataclass field may well be called `eval`.
        loaded = isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load)
        if loaded and _banned_name(_dotted(node)):
            problems.append(f"line {node.lineno}: uses {_dotted(node)}")
    if problems:
        raise Rejected("static", f"not allowed in a {role} script: {'; '.join(problems[:5])}")


def run_candidate(
    sandbox: Sandbox,
    script: Path,
    args: list[str],
    *,
    inputs: list[Path],
    output_dir: Path,
    limits: Limits,
    log: Path,
    output: dict,
) -> Result:
    """Run a script in the sandbox, keep its Result at `log` (outside `output_dir`), raise
    Rejected if it failed or left anything unsafe in `output_dir` (caps: VOTES_/MODEL_OUTPUT)."""
    result = sandbox.run(script, args, inputs=inputs, output_dir=output_dir, limits=limits)
    save_result(result, log)
    if not result.ok:
        raise Rejected("run", result.reason(), result.stderr_tail)
    inspect_step(output_dir, output)
    return result


def save_result(result: Result, path: Path) -> None:
    """Result.save writes through a symlink; the atomic write replaces one instead."""
    write_json(asdict(result), path)


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


def annotate_args(
    model_dir: Path, input_path: Path, output_path: Path, task: TaskSpec, device: str, threads: int
) -> list[str]:
    """The command line every annotate script gets: in the run (agent.annotate) and its probe."""
    return [
        "--model", str(model_dir),
        "--input", str(input_path),
        "--output", str(output_path),
        "--batch-size", str(task.batch_size),
        "--max-length", str(task.max_length),
        "--device", device,
        "--threads", str(threads),
    ]  # fmt: skip


def finetune_args(
    model_dir: Path, train: Path, gate: Path, out: Path, device: str, threads: int
) -> list[str]:
    """The command line every finetune script gets: in the run (agent.finetune) and its probe."""
    return [
        "--model", str(model_dir),
        "--train", str(train),
        "--eval", str(gate),
        "--out", str(out),
        "--device", device,
        "--threads", str(threads),
    ]  # fmt: skip


def check_model_dir(
    path: Path, labels: list[str], reference: Path | None = None, texts: list[str] = ()
) -> None:
    """A save_pretrained classifier with its tokenizer, loadable, with exactly `labels`; with a
    `reference` model dir, its tokenizer must turn `texts` into the same ids (canary)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (path / "config.json").is_file():
        raise Rejected("contract", f"no config.json in {path}")
    # Without its files AutoTokenizer still returns a tokenizer, one that knows no words.
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise Rejected("contract", f"no tokenizer files in {path} (save the tokenizer too)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        # Weights an untrusted script wrote: safetensors only (no pickle at all), and
        # transformers runs no remote code unless asked.
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
    except Exception as err:  # transformers raises many kinds; every one means "not loadable"
        raise Rejected("contract", f"{path} does not load: {type(err).__name__}: {err}") from None
    found = [model.config.id2label[i] for i in sorted(model.config.id2label)]
    if found != list(labels):
        raise Rejected("canary", f"saved model's labels are {found}, the source's are {labels}")
    if reference is not None and texts:
        expected = AutoTokenizer.from_pretrained(reference)(list(texts))["input_ids"]
        if tokenizer(list(texts))["input_ids"] != expected:
            raise Rejected("canary", f"the saved tokenizer does not tokenize like {reference}'s")


def check_votes(
    path: Path, rows: pd.DataFrame, labels: list[str], expected: pd.Series | None
) -> pd.DataFrame:
    """The annotate contract, and the canary: the template's labels on the same rows (by id),
    held by the host where no candidate can read them; None checks the contract only."""
    # Imported here: agent.annotate imports agent.codegen, which imports this module.
    from agent.annotate import StepFailed, validate_votes

    try:
        votes = validate_votes(path, rows, labels)
    except StepFailed as err:
        raise Rejected("contract", str(err).split(": ", 1)[-1]) from None
    if expected is None:
        return votes
    got = votes.set_index("id")["label"].reindex(expected.index)
    wrong = expected.index[got != expected]
    if len(wrong):
        sample = ", ".join(f"id {i}: {got[i]} (expected {expected[i]})" for i in wrong[:3])
        raise Rejected(
            "canary",
            f"{len(wrong)} of {len(expected)} labels differ from the reference script's: {sample}",
        )
    return votes


def check_speed(candidate: Result, reference: Result) -> None:
    ratio = candidate.duration_s / max(reference.duration_s, 1e-9)
    if ratio > SPEED_FACTOR:
        raise Rejected(
            "speed",
            f"{candidate.duration_s:.1f}s on the probe rows, {ratio:.1f}x the template's "
            f"{reference.duration_s:.1f}s (limit {SPEED_FACTOR:.0f}x)",
        )


def check_finetune_metrics(path: Path, eval_rows: int) -> dict:
    """metrics.json with before/after accuracy, loss and rows on the eval set, and train time.

    The script's own account, kept for the record; the gate is scored by the host."""
    try:
        raw = read_bytes_bounded(path, METRICS_BYTES)
    except FileNotFoundError:
        raise Rejected("contract", f"no metrics.json in {path.parent}") from None
    except UnsafeOutput as err:
        raise Rejected("contract", f"unsafe output: {err.reason}") from None
    try:
        metrics = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        # The error's text would quote the bytes; their place in the file is enough.
        raise Rejected("contract", "metrics.json is not UTF-8 JSON") from None
    problems = []
    for phase in ("before", "after"):
        part = metrics.get(phase) if isinstance(metrics, dict) else None
        if not isinstance(part, dict):
            problems.append(f"no {phase!r} object")
            continue
        accuracy, loss = part.get("accuracy"), part.get("loss")
        if not isinstance(accuracy, int | float) or not 0 <= accuracy <= 1:
            problems.append(f"{phase}.accuracy is {accuracy!r}, expected a number in [0, 1]")
        if not isinstance(loss, int | float) or not math.isfinite(loss):
            problems.append(f"{phase}.loss is {loss!r}, expected a finite number")
        if part.get("rows") != eval_rows:
            problems.append(f"{phase}.rows is {part.get('rows')!r}, the eval set has {eval_rows}")
    if isinstance(metrics, dict) and not isinstance(metrics.get("train_seconds"), int | float):
        problems.append("no numeric 'train_seconds'")
    if problems:
        raise Rejected("contract", f"metrics.json: {'; '.join(problems)}")
    return metrics


def finetune_probe(rows: pd.DataFrame, labels: list[str], directory: Path) -> tuple[Path, Path]:
    """A tiny train and eval set from real texts, labelled round-robin with the model's labels."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "text": rows["text"].astype(str).tolist(),
            "label": [labels[i % len(labels)] for i in range(len(rows))],
        }
    )
    n_eval = max(len(labels), len(frame) // 4)
    train, gate = directory / "train.parquet", directory / "eval.parquet"
    frame.iloc[n_eval:].to_parquet(train, index=False)
    frame.iloc[:n_eval].to_parquet(gate, index=False)
    return train, gate
