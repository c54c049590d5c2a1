"""What the LLM is shown to write a script for one model: the folder's facts and a worked example.

A good engineer handed a model they have not seen reads its folder (which files, what the
config says, how the card says to use it, what kind of head it has and which labels it gives)
and starts from a script that already works for a neighbour. `model_facts` collects that from
the model folder, `worked_example` picks the neighbour: a script the LLM already wrote for
another model of the same kind that passed its probe in this run, else the role's verified
template. Everything read from the folder is untrusted (a card is anyone's text), so it goes
into the prompt fenced and escaped, and what comes back is checked like any other answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.domain import CommitteeMember, ModelKind
from agent.hub.protocol import split_front_matter
from agent.prompting import escape_tag
from agent.scripts.verify import template_file, template_name

# Config keys that say how a model is built and read, in this order; the rest is noise.
CONFIG_KEYS = (
    "architectures", "model_type", "problem_type", "id2label", "hidden_size",
    "num_hidden_layers", "max_position_embeddings",
)  # fmt: skip
MAX_FILES = 40
CARD_CHARS = 2400
JSON_CHARS = 600
# The card's section on use: "## How to use", "## Usage", "## Intended use" ...
USAGE_HEADING = re.compile(r"^#{1,4}\s*(how to use|usage|intended use|use)\b.*$", re.I | re.M)
NEXT_HEADING = re.compile(r"^#{1,4}\s", re.M)
# Small JSON files beside the weights that tell how to use them (a head's labels, pooling).
SIDE_CONFIGS = ("config_setfit.json", "1_Pooling/config.json", "modules.json")


@dataclass(frozen=True)
class ModelFacts:
    files: list[str]  # relative paths with sizes, "model.safetensors (90.9 MB)"
    config: str  # the CONFIG_KEYS of config.json, as JSON
    side_configs: dict[str, str]  # SIDE_CONFIGS present, as their (clipped) JSON
    usage: str  # the card's usage section, or its opening when it has none
    kind: str
    labels: list[str]
    # config.json's id2label names, where they are not `labels`: outputs to be mapped to them.
    outputs: list[str]

    def as_prompt(self) -> dict[str, object]:
        """Template variables, every text from the folder fenced against tag forgery."""
        return {
            "files": self.files,
            "config": escape_tag(self.config, "config"),
            "side_configs": {
                name: escape_tag(text, "config") for name, text in self.side_configs.items()
            },
            "usage": escape_tag(self.usage, "card"),
            "kind": self.kind,
            "labels": self.labels,
            "outputs": [escape_tag(name, "config") for name in self.outputs],
        }


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.1f} kB"


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def card_usage(card: str) -> str:
    """The card's usage section (heading included), else the start of its body; clipped."""
    _, body = split_front_matter(card)
    found = USAGE_HEADING.search(body)
    if found is None:
        return body.strip()[:CARD_CHARS]
    end = NEXT_HEADING.search(body, found.end())
    section = body[found.start() : end.start() if end else len(body)]
    return section.strip()[:CARD_CHARS]


def model_facts(model_dir: Path, model: CommitteeMember, card: Path | None = None) -> ModelFacts:
    """The facts of the folder a script will be given as --model (or deploy's --source), with
    the usage section of `card`, else of the folder's README.md: a deployed copy holds what
    the scripts need, not the card, so a run passes the hub's."""
    # The card is quoted below; the prompt has to fit a small local model's context.
    paths = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != "README.md")
    files = [f"{p.relative_to(model_dir).as_posix()} ({_size(p.stat().st_size)})" for p in paths]
    config = _read_json(model_dir / "config.json")
    excerpt = {k: config[k] for k in CONFIG_KEYS if k in config} if isinstance(config, dict) else {}
    if isinstance(config, dict) and "id2label" not in config:
        excerpt["id2label"] = "(none: config.json names no labels)"
    side = {
        name: json.dumps(data)[:JSON_CHARS]
        for name in SIDE_CONFIGS
        if (data := _read_json(model_dir / name)) is not None
    }
    id2label = config.get("id2label") if isinstance(config, dict) else None
    outputs = [str(name) for name in id2label.values()] if isinstance(id2label, dict) else []
    cards = [path for path in (card, model_dir / "README.md") if path and path.is_file()]
    usage = card_usage(cards[0].read_text(encoding="utf-8", errors="replace")) if cards else ""
    return ModelFacts(
        files=files[:MAX_FILES]
        + ([f"... {len(files) - MAX_FILES} more"] if len(files) > MAX_FILES else []),
        config=json.dumps(excerpt),
        side_configs=side,
        usage=usage or "(the card says nothing about use)",
        kind=str(model.kind),
        labels=list(model.labels),
        outputs=[] if sorted(outputs) == sorted(model.labels) else outputs,
    )


SECTION_START = "# ---- model section:"
SECTION_END = "# ---- end of model section ----"


def model_section(script: str) -> str | None:
    """The model section of a script built on templates/annotate_harness.py.j2, or None."""
    start = script.find(SECTION_START)
    end = script.find(SECTION_END)
    if start < 0 or end < start:
        return None
    return script[script.index("\n", start) + 1 : end].strip("\n")


def worked_example(
    manifest: dict,
    role: str,
    model: CommitteeMember,
    template: str,
    read: Callable[[str], str],
    part: Callable[[str], str | None] = lambda script: script,
) -> tuple[str, str, str]:
    """(where it comes from, its code, the kind it runs): `part` of the script that already
    passed for another model of the same kind in this run (written or taken from the cache),
    else `template`, the role's verified template (or its part)."""
    for entry in manifest["scripts"]:
        if (
            entry["role"] == role
            and entry["origin"] in ("llm", "cache")
            and entry.get("kind") == model.kind
            and entry["slug"] != model.slug
            and (passed := part(read(entry["path"]))) is not None
        ):
            return f"the code that passed for {entry['model']}", passed, model.kind
    # A role's own template is the classifier's; another (deploy_whole) is the model's kind's.
    own = template_name(role, model.kind) == role
    written_for = ModelKind.SEQUENCE_CLASSIFICATION if own else model.kind
    return (
        f"the verified template ({template_file(role, model.kind)})",
        without_docstring(template),
        written_for,
    )


def without_docstring(code: str) -> str:
    """The code less its module docstring: prose the prompt states anyway, tokens it lacks."""
    stripped = code.lstrip()
    if not stripped.startswith('"""'):
        return code
    end = stripped.find('"""', 3)
    return stripped[end + 3 :].lstrip("\n") if end >= 0 else code
