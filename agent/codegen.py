"""The pipeline's scripts: rendered into the run directory, one per role and model.

Today every script comes from the jinja2 templates in `templates/` (the verified fallback
of the paper's LLM-written code); each is recorded in scripts/manifest.json with its origin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jinja2 import Environment, StrictUndefined

from agent.runstore import RunStore, read_json, write_json
from agent.task import TaskSpec

ROLES = ("deploy", "annotate", "finetune")


def _environment() -> Environment:
    return Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


def template_source(role: str) -> str:
    return resources.files("templates").joinpath(f"{role}.py.j2").read_text(encoding="utf-8")


def render(role: str, model_id: str, task: TaskSpec) -> str:
    return (
        _environment()
        .from_string(template_source(role))
        .render(
            model_id=model_id,
            task_description=task.description.replace('"""', "'''"),
            batch_size=task.batch_size,
            max_length=task.max_length,
            lr=task.finetune_lr,
            weight_decay=task.finetune_weight_decay,
            epochs=task.finetune_epochs,
            seed=task.seed,
        )
    )


@dataclass(frozen=True)
class ScriptRef:
    role: str
    slug: str
    path: Path


def script_path(store: RunStore, role: str, slug: str) -> Path:
    return store.scripts_dir / role / f"{slug}.py"


def write_scripts(store: RunStore, task: TaskSpec, models: list[dict]) -> dict:
    """Render every (role, model) script that is not already there; return the manifest."""
    manifest_path = store.scripts_dir / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {"scripts": []}
    known = {(s["role"], s["slug"]) for s in manifest["scripts"]}
    for model in models:
        for role in ROLES:
            if (role, model["slug"]) in known:
                continue
            code = render(role, model["id"], task)
            path = script_path(store, role, model["slug"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code, encoding="utf-8")
            manifest["scripts"].append(
                {
                    "role": role,
                    "slug": model["slug"],
                    "model": model["id"],
                    "path": str(path.relative_to(store.root)),
                    "origin": "template",
                    "template": f"templates/{role}.py.j2",
                    "sha256": hashlib.sha256(code.encode()).hexdigest(),
                    "status": "rendered",
                }
            )
    write_json(manifest, manifest_path)
    return manifest
