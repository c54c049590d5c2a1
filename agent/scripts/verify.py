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
from pathlib import Path

import pandas as pd

from agent.errors import RunError, StepFailed
from agent.scripts.contract import validate_votes
from sandbox.base import Limits, Result, Sandbox

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


class Rejected(RunError):
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
) -> Result:
    """Run a script in the sandbox, keep its Result at `log`, raise Rejected if it failed."""
    result = sandbox.run(script, args, inputs=inputs, output_dir=output_dir, limits=limits)
    result.save(log)
    if not result.ok:
        raise Rejected("run", result.reason(), result.stderr_tail)
    return result


def check_model_dir(
    path: Path, labels: list[str], reference: Path | None = None, texts: list[str] = ()
) -> None:
    """A save_pretrained classifier with its tokenizer, loadable, with exactly `labels`; with a
    `reference` model dir, its tokenizer must turn `texts` into the same ids (canary)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415 - torch: seconds to import, only here

    if not (path / "config.json").is_file():
        raise Rejected("contract", f"no config.json in {path}")
    # Without its files AutoTokenizer still returns a tokenizer, one that knows no words.
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise Rejected("contract", f"no tokenizer files in {path} (save the tokenizer too)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        # Safe on weights an untrusted script wrote: transformers reads safetensors, or a
        # pickle with torch.load(weights_only=True), and runs no remote code unless asked.
        model = AutoModelForSequenceClassification.from_pretrained(path)
    except Exception as err:  # transformers raises many kinds; every one means "not loadable"
        raise Rejected("contract", f"{path} does not load: {type(err).__name__}: {err}") from None
    found = [model.config.id2label[i] for i in sorted(model.config.id2label)]
    if found != list(labels):
        raise Rejected("canary", f"saved model's labels are {found}, the source's are {labels}")
    if reference is not None and texts:
        expected = AutoTokenizer.from_pretrained(reference)(list(texts))["input_ids"]
        if tokenizer(list(texts))["input_ids"] != expected:
            raise Rejected("canary", f"the saved tokenizer does not tokenize like {reference}'s")


def check_votes(path: Path, rows: pd.DataFrame, labels: list[str], reference: Path) -> None:
    """The annotate contract, and the canary: the template's labels on the same rows."""
    try:
        votes = validate_votes(path, rows, labels)
    except StepFailed as err:
        raise Rejected("contract", str(err).split(": ", 1)[-1]) from None
    expected = pd.read_parquet(reference).set_index("id")["label"]
    got = votes.set_index("id")["label"].reindex(expected.index)
    wrong = expected.index[got != expected]
    if len(wrong):
        sample = ", ".join(f"id {i}: {got[i]} (expected {expected[i]})" for i in wrong[:3])
        raise Rejected(
            "canary",
            f"{len(wrong)} of {len(expected)} labels differ from the reference script's: {sample}",
        )


def check_speed(candidate: Result, reference: Result) -> None:
    ratio = candidate.duration_s / max(reference.duration_s, 1e-9)
    if ratio > SPEED_FACTOR:
        raise Rejected(
            "speed",
            f"{candidate.duration_s:.1f}s on the probe rows, {ratio:.1f}x the template's "
            f"{reference.duration_s:.1f}s (limit {SPEED_FACTOR:.0f}x)",
        )


def check_finetune_metrics(path: Path, eval_rows: int) -> dict:
    """metrics.json with before/after accuracy, loss and rows on the eval set, and train time."""
    if not path.is_file():
        raise Rejected("contract", f"no metrics.json in {path.parent}")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Rejected("contract", f"metrics.json is not JSON: {err}") from None
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
