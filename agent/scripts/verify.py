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
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from sklearn.metrics import cohen_kappa_score

from agent.domain import ModelKind
from agent.errors import Rejected, StepFailed
from agent.scripts.contract import METRICS_BYTES, inspect_step, validate_votes
from agent.store.runstore import write_json
from sandbox.base import Limits, Result, Sandbox
from sandbox.outputs import UnsafeOutput, read_bytes_bounded

# What a script may import, by top-level module: what the templates use and what an LLM writing a
# transformers classification script reaches for. An allowlist: the denylist it replaces let
# aliases, private C modules (_posixsubprocess, _socket) and loaders (pickle, runpy) through.
SCRIPT_MODULES = frozenset(
    {
        "__future__", "abc", "argparse", "collections", "contextlib", "copy", "csv", "dataclasses",
        "datetime", "enum", "functools", "gc", "glob", "heapq", "itertools", "json", "logging",
        "math", "os", "pathlib", "random", "re", "resource", "shutil", "statistics", "sys", "time",
        "traceback", "types", "typing", "warnings",
        "numpy", "pandas", "pyarrow", "safetensors", "scipy", "sklearn", "tokenizers", "torch",
        "tqdm", "transformers",
    }
)  # fmt: skip
# Deploy fetches the model; huggingface_hub is the client transformers itself downloads with.
ROLE_MODULES = {
    "annotate": SCRIPT_MODULES,
    "finetune": SCRIPT_MODULES,
    "deploy": SCRIPT_MODULES | {"huggingface_hub"},
}
# Of these modules only these attributes: the others reach processes, links, permissions, the
# interpreter's internals (sys.modules, sys._getframe, sys.path), native code
# (torch.utils.cpp_extension) or frames.
MODULE_ATTRIBUTES = {
    "os": frozenset(
        {
            "path", "environ", "getenv", "makedirs", "mkdir", "listdir", "scandir", "walk",
            "remove", "unlink", "rename", "replace", "rmdir", "stat", "getcwd", "cpu_count",
            "sched_getaffinity", "getpid", "fspath", "sep", "linesep", "devnull", "PathLike",
        }
    ),
    "sys": frozenset(
        {"argv", "exit", "stdout", "stderr", "stdin", "version", "version_info", "platform",
         "maxsize", "float_info"}
    ),
    "shutil": frozenset({"copy", "copy2", "copyfile", "copyfileobj", "copytree", "move"}),
    "gc": frozenset({"collect"}),  # gc.get_objects and get_referrers reach every frame
    "traceback": frozenset({"print_exc", "format_exc"}),
    "types": frozenset({"SimpleNamespace"}),  # types.CodeType builds bytecode
    "torch.utils": frozenset({"data", "checkpoint"}),
}  # fmt: skip
# Parts of allowed modules that load native code, unpickle, spawn processes, open sockets or
# import by name (logging.config builds handlers from dotted strings).
DENIED_PATHS = frozenset(
    {
        "numpy.ctypeslib", "numpy.f2py", "numpy.distutils", "numpy.testing",
        "torch.hub", "torch.ops", "torch.classes", "torch.package", "torch.library",
        "torch.distributed", "torch.multiprocessing", "torch.serialization",
        "pandas.read_pickle", "pandas.read_clipboard", "pandas.io", "pandas.eval",
        "logging.config", "logging.handlers", "tqdm.contrib", "pyarrow.cffi", "pyarrow.flight",
        "transformers.dynamic_module_utils", "typing.get_type_hints", "typing.ForwardRef",
    }
)  # fmt: skip
# Dunders a script may name (the main guard, versions, super().__init__); every escape from
# Python's rules (__class__, __subclasses__, __globals__, __builtins__, __import__) is another.
DUNDERS = frozenset(
    {"__name__", "__main__", "__file__", "__doc__", "__init__", "__version__", "__future__"}
)
# Denied on whatever object holds them, since the check cannot know a value's type: processes,
# links, permissions, live frames (a generator's gi_frame reaches f_builtins without a dunder).
DENIED_ATTRIBUTES = frozenset(
    {
        "system", "popen", "fork", "forkpty", "kill", "killpg", "symlink", "symlink_to",
        "hardlink_to", "link_to", "mkfifo", "mknod", "chmod", "lchmod", "fchmod", "chown",
        "lchown", "fchown", "chroot", "setuid", "seteuid", "setgid", "setegid", "setreuid",
        "setregid", "setresuid", "setresgid", "gi_frame", "cr_frame", "ag_frame", "tb_frame",
        "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "co_code", "load_library",
        "read_pickle", "read_clipboard", "to_clipboard", "ctypeslib", "cpp_extension",
        "load_inline",
    }
)  # fmt: skip
DENIED_ATTRIBUTE_PREFIXES = ("execv", "execl", "spawnv", "spawnl", "posix_spawn")
# Builtins that run or compile code from strings, hand out namespaces, or wait on a terminal.
DENIED_BUILTINS = frozenset(
    {"eval", "exec", "compile", "globals", "locals", "vars", "breakpoint", "input", "help"}
)
# Attribute access by name: only with a literal name, which is then checked like `obj.name`.
ATTRIBUTE_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
# Keyword arguments that turn a load into code execution unless they hold this literal value.
SAFE_KEYWORDS = {"trust_remote_code": False, "allow_pickle": False}
# Standard modules named like the attributes of allowed ones (np.array, scipy.signal, os.stat):
# these names alone do not mean a module was reached; any other standard module's name does.
STDLIB_MODULES = sys.stdlib_module_names
ATTRIBUTE_LIKE_MODULES = frozenset(
    {"array", "io", "numbers", "platform", "select", "signal", "stat", "string"}
)
DUNDER_IN_TEXT = re.compile(r"__\w+__")
# A fixed absolute path (/proc/self/environ, /etc/passwd): a script's paths come from its options.
ABSOLUTE_PATH = re.compile(r"/[\w.~-]")
# Any one of these means a tokenizer was saved (fast, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
    "tokenizer.model",
)  # fmt: skip
# A probe run of a generated annotate script may take this many times the template's.
SPEED_FACTOR = 5.0
# A script for a model no template runs has no canary; its labels on the probe rows must agree
# with those of the members whose scripts passed beyond chance, by Cohen's kappa against their
# plurality. Measured on the toxicity demo's rows (64 a probe): the multi-label model read as
# its card says 0.57-0.84, its heads read in the wrong order 0.05-0.28, random labels -0.07-0.07.
MIN_PEER_KAPPA = 0.4
# Below this many probe rows kappa cannot tell: at 16 rows the wrong order reached 0.60 and the
# card's reading 0.62; at 32 they were still apart (0.36 against 0.50 and more).
MIN_PEER_ROWS = 32
# What transformers prints when a model class builds a layer the checkpoint lacks.
NEWLY_INITIALIZED = "newly initialized"
# What the jinja2 templates were written for; any other kind needs an LLM-written script.
TEMPLATE_KINDS = frozenset({ModelKind.SEQUENCE_CLASSIFICATION})
# Why the templates (AutoModelForSequenceClassification, id2label, softmax) fail a model of
# another kind: added to the probe's own reason, so the record says what to do differently.
KIND_NOTES = {
    ModelKind.MULTI_LABEL: "its heads are independent sigmoids, not one softmax over the "
    "task's labels; its card says how they decide a label",
    ModelKind.EMBEDDING_HEAD: "it is a sentence encoder with a classifier head saved beside "
    "it, with no id2label in config.json",
    ModelKind.ONNX: "it is an ONNX export with no PyTorch weights",
}


def template_name(role: str, kind: str = ModelKind.SEQUENCE_CLASSIFICATION) -> str:
    """The role's verified template for a model of `kind` (templates/NAME.py.j2). Fetching a
    model's files is the same for every kind, so a kind the classifier templates cannot load
    is deployed by copying them (deploy_whole); reading them is the annotate section's work."""
    return "deploy_whole" if role == "deploy" and kind not in TEMPLATE_KINDS else role


def template_file(role: str, kind: str = ModelKind.SEQUENCE_CLASSIFICATION) -> str:
    """Where that template is in the repository, as a manifest and a diff name it."""
    return f"templates/{template_name(role, kind)}.py.j2"


# Files a deploy may leave behind: the card describes the model, it is not part of it.
NOT_DEPLOYED = frozenset({"README.md", ".gitattributes"})


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _matches(path: str, rules) -> str | None:
    """The rule `path` falls under, also where a module re-exports it (torch.os is os)."""
    return next((rule for rule in rules if path == rule or path.endswith(f".{rule}")), None)


def _denied_path(path: str, modules: frozenset[str]) -> bool:
    """Is `path` (a resolved module path such as os.path.join) outside what a script may reach?"""
    parts = path.split(".")
    if parts[0] not in modules:
        return True
    for i, name in enumerate(parts[1:], start=1):
        prefix = ".".join(parts[:i])
        rule = _matches(prefix, MODULE_ATTRIBUTES)
        if name.startswith("_") and name not in DUNDERS:
            return True
        if rule and name not in MODULE_ATTRIBUTES[rule]:
            return True
        if _matches(f"{prefix}.{name}", DENIED_PATHS):
            return True
        # A module reached as another's attribute (torch.serialization.pickle) is imported.
        if name in STDLIB_MODULES and name not in modules and name not in ATTRIBUTE_LIKE_MODULES:
            return True
    return False


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and name not in DUNDERS


def _denied_attribute(name: str) -> bool:
    return _dunder(name) or name in DENIED_ATTRIBUTES or name.startswith(DENIED_ATTRIBUTE_PREFIXES)


class _Names:
    """The script's import aliases, resolved: what each name bound by an import stands for."""

    def __init__(self, tree: ast.AST, modules: frozenset[str]) -> None:
        self.modules = modules
        self.aliases: dict[str, str] = {}
        self.module_names: set[str] = set()  # names bound to a module object
        self.problems: list[tuple[int, str]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    self.aliases[bound] = alias.name if alias.asname else bound
                    self.module_names.add(bound)
                    self._check_import(node, alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level or any(alias.name == "*" for alias in node.names):
                    self.problems.append((node.lineno, "a relative or * import"))
                    continue
                for alias in node.names:
                    path = f"{node.module}.{alias.name}"
                    self.aliases[alias.asname or alias.name] = path
                    if _matches(path, MODULE_ATTRIBUTES):
                        self.module_names.add(alias.asname or alias.name)
                    if node.module != "__future__":
                        self._check_import(node, path)

    def _check_import(self, node: ast.stmt, path: str) -> None:
        if _denied_path(path, self.modules):
            self.problems.append((node.lineno, f"imports {path}"))

    def resolve(self, node: ast.AST, attribute: str = "") -> str:
        """The module path `node` (.attribute) names, e.g. np.ctypeslib -> numpy.ctypeslib."""
        head, _, rest = ".".join(filter(None, [_dotted(node), attribute])).partition(".")
        return ".".join(filter(None, [self.aliases[head], rest])) if head in self.aliases else ""

    def denied(self, node: ast.AST, attribute: str = "") -> bool:
        path = self.resolve(node, attribute)
        return bool(path) and _denied_path(path, self.modules)


def _literal(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _call_problems(node: ast.Call, names: _Names) -> list[str]:
    """What a call's own arguments give away: names built at run time, unsafe loader options,
    fixed absolute paths (/proc, /etc: a script's paths all come from its command line)."""
    problems = []
    keywords = {kw.arg: kw.value for kw in node.keywords}
    func = node.func.id if isinstance(node.func, ast.Name) else ""
    if func in ATTRIBUTE_BUILTINS:
        name = node.args[1] if len(node.args) > 1 else None
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            problems.append(f"{func} with a name that is not a literal string")
        elif _denied_attribute(name.value) or names.denied(node.args[0], name.value):
            problems.append(f"{func} of {name.value}")
    for keyword, safe in SAFE_KEYWORDS.items():
        if keyword in keywords and not _literal(keywords[keyword], safe):
            problems.append(f"{keyword} other than {safe}")
    weights_only = _literal(keywords.get("weights_only"), True)
    if names.resolve(node.func) == "torch.load" and not weights_only:
        problems.append("torch.load without weights_only=True")
    problems += [
        f"the fixed path {arg.value}"
        for arg in [*node.args, *keywords.values()]
        if isinstance(arg, ast.Constant)
        and isinstance(arg.value, str)
        and ABSOLUTE_PATH.match(arg.value)
    ]
    return problems


def _string_annotations(tree: ast.AST) -> list[ast.Constant]:
    """Annotations written as strings: HfArgumentParser and typing.get_type_hints eval them."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            candidates = [a.annotation for a in [*node.posonlyargs, *node.args, *node.kwonlyargs]]
            candidates += [node.vararg and node.vararg.annotation]
            candidates += [node.kwarg and node.kwarg.annotation]
        elif isinstance(node, ast.AnnAssign):
            candidates = [node.annotation]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            candidates = [node.returns]
        else:
            continue
        found += [c for c in candidates if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return found


def static_check(code: str, role: str) -> None:
    """Raise Rejected('static') unless `code` parses and stays within what `role` may use.

    An allowlist of imports (ROLE_MODULES) and of the risky modules' attributes, with import
    aliases resolved, no dunders beyond DUNDERS, no attribute access by a computed name, no code
    from strings and no unpickling. It is a first filter that turns an LLM's mistakes into a
    short message naming the line, for the repair prompt; the sandbox is the wall, since Python
    always leaves a way to hide a call from the ast.
    """
    try:
        tree = ast.parse(code)
        annotations = [
            (ann.lineno, ast.parse(ann.value.strip(), mode="eval"))
            for ann in _string_annotations(tree)
        ]
    except SyntaxError as err:
        raise Rejected("static", f"not valid Python: {err.msg} (line {err.lineno})") from None
    names = _Names(tree, ROLE_MODULES[role])
    problems = names.problems
    for line, subtree in [(0, tree), *annotations]:
        nodes = list(ast.walk(subtree))
        parents = {child: node for node in nodes for child in ast.iter_child_nodes(node)}
        for node in nodes:
            where = line or getattr(node, "lineno", 0)
            problems += [(where, p) for p in _node_problems(node, parents.get(node), names)]
    if problems:
        found = [f"line {line}: {problem}" for line, problem in sorted(dict.fromkeys(problems))]
        raise Rejected("static", f"not allowed in a {role} script: {'; '.join(found[:5])}")


def _node_problems(node: ast.AST, parent: ast.AST | None, names: _Names) -> list[str]:
    called = isinstance(parent, ast.Call) and parent.func is node
    found = []
    if isinstance(node, ast.Name):
        # Only reads of builtins count: a dataclass field may well be called `eval`.
        loaded = isinstance(node.ctx, ast.Load)
        if _dunder(node.id) or (loaded and node.id in DENIED_BUILTINS):
            found.append(f"uses {node.id}")
        elif loaded and node.id in ATTRIBUTE_BUILTINS and not called:
            found.append(f"uses {node.id} as a value")
        elif loaded and node.id in names.module_names and not isinstance(parent, ast.Attribute):
            # Bound to another name or passed on, a module's attributes escape the check.
            found.append(f"uses the module {names.aliases[node.id]} as a value")
    elif isinstance(node, ast.Attribute):
        if _denied_attribute(node.attr):
            found.append(f"uses {ast.unparse(node)[-60:]}")
        elif not isinstance(parent, ast.Attribute) and names.denied(node):
            found.append(f"uses {names.resolve(node)}")
    elif isinstance(node, ast.Call):
        found += _call_problems(node, names)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        # "{0.__class__}".format(x) reads a dunder; a docstring (a bare expression) reads nothing.
        hidden = set(DUNDER_IN_TEXT.findall(node.value)) - DUNDERS
        if not isinstance(parent, ast.Expr):
            found += [f"a string naming {name}" for name in sorted(hidden)]
        # f(**{"trust_remote_code": True}) passes the keyword where _call_problems cannot see it.
        if node.value in SAFE_KEYWORDS:
            found.append(f"{node.value} as a string")
    if names.resolve(node) == "torch.load" and not called:
        found.append("uses torch.load as a value")
    return found


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
    Rejected if it failed or left anything unsafe in `output_dir` (caps: contract.*_OUTPUT)."""
    result = sandbox.run(script, args, inputs=inputs, output_dir=output_dir, limits=limits)
    save_result(result, log)
    if not result.ok:
        raise Rejected("run", result.reason(), result.stderr_tail)
    inspect_step(output_dir, output)
    return result


def check_weights_loaded(result: Result) -> None:
    """Reject a run whose model has layers its folder has no weights for: transformers says
    so ("newly initialized", in v5's load report too), and such a model answers at random
    while keeping every other check (a classifier head on a bare encoder). A check on what
    an honest but wrong script prints, not a wall: a script can silence the warning."""
    if NEWLY_INITIALIZED in result.stderr_tail or NEWLY_INITIALIZED in result.stdout_tail:
        raise Rejected(
            "weights",
            "its model has layers the folder has no weights for (transformers: newly "
            "initialized), so it would answer at random: load the classes and files the card "
            "names",
            result.stderr_tail,
        )


def check_peers(votes: pd.Series, peers: Sequence[pd.Series]) -> float | None:
    """Cohen's kappa of `votes` (task labels by row id) against the plurality of `peers` (the
    same, from the members whose scripts passed); Rejected below MIN_PEER_KAPPA. None where it
    cannot tell: no peers, fewer than MIN_PEER_ROWS rows, or a plurality of one label."""
    if not peers or len(votes) < MIN_PEER_ROWS:
        return None
    # The plurality per row; a tie goes to the first label in sorted order.
    plurality = pd.concat(peers, axis=1).reindex(votes.index).mode(axis=1)[0]
    if plurality.nunique() < 2:
        return None
    ours, theirs = votes.astype(str), plurality.astype(str)
    kappa = float(cohen_kappa_score(ours, theirs))
    if not kappa >= MIN_PEER_KAPPA:
        # The counts and the disagreements show a writer what kappa alone hides: one label
        # for every row (seen: a 1.5B model's section that always said non-toxic), or each
        # label given the other's probability (seen: kappa -0.80).
        raise Rejected(
            "peers",
            f"its labels agree with the plurality of the members whose scripts passed at "
            f"Cohen's kappa {kappa:.2f} on {len(votes)} probe rows, below {MIN_PEER_KAPPA} "
            f"(its labels: {_label_counts(ours)}; theirs: {_label_counts(theirs)}; "
            f"{_disagreements(ours, theirs)}): it does not read the model the way its card says",
        )
    return kappa


def _label_counts(labels: pd.Series) -> str:
    """How often each label was given, by label: "non-toxic 41, toxic 23"."""
    counts = labels.value_counts().sort_index()
    return ", ".join(f"{label} {count}" for label, count in counts.items())


def _disagreements(votes: pd.Series, plurality: pd.Series, most: int = 3) -> str:
    """The rows where the two differ, most frequent pairs first: "it says toxic where they
    say non-toxic on 33 rows, ..."."""
    differ = votes != plurality
    pairs = pd.crosstab(votes[differ], plurality[differ]).stack().sort_values(ascending=False)
    said = [
        f"it says {ours} where they say {theirs} on {count} rows"
        for (ours, theirs), count in pairs.head(most).items()
        if count
    ]
    return ", ".join(said) or "no row differs"


def save_result(result: Result, path: Path) -> None:
    """Result.save writes through a symlink; the atomic write replaces one instead."""
    write_json(asdict(result), path)


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


def for_kind(rejected: Rejected, role: str, kind: ModelKind) -> Rejected:
    """The template's rejection, saying why the templates cannot run a model of this kind."""
    note = KIND_NOTES.get(kind)
    if note is None:
        return rejected
    reason = f"{rejected.reason} (the {role} template cannot run a model of kind {kind}: {note})"
    return Rejected(rejected.stage, reason, rejected.stderr)


def check_deployed_whole(path: Path, source: Path, kind: ModelKind) -> None:
    """A model of a kind the host cannot load is deployed whole: every file of the source
    (but its card) must be in `path`, under the same relative name."""
    expected = {
        p.relative_to(source).as_posix()
        for p in source.rglob("*")
        if p.is_file() and p.name not in NOT_DEPLOYED
    }
    found = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    missing = sorted(expected - found)
    if missing:
        raise Rejected(
            "contract",
            f"a model of kind {kind} is deployed whole, and {path} lacks {', '.join(missing[:6])}"
            + (f" and {len(missing) - 6} more" if len(missing) > 6 else ""),
        )


def check_votes(
    path: Path, rows: pd.DataFrame, labels: list[str], expected: pd.Series | None
) -> pd.DataFrame:
    """The annotate contract, and the canary: the template's labels on the same rows (by id),
    held by the host where no candidate can read them; None checks the contract only."""
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
    # The run's train sets carry a weight per row: the probe's does too, so a script is tried
    # on the columns it will get.
    frame.iloc[n_eval:].assign(weight=1.0).to_parquet(train, index=False)
    frame.iloc[:n_eval].to_parquet(gate, index=False)
    return train, gate
