"""What every `autoannotator` sub-command shares: consoles, one-line errors, the hub."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from agent.errors import RunError, UserError
from agent.hub.demo import build_demo_hub
from agent.hub.hf import HfHub
from agent.hub.local import LocalHub
from sandbox.base import SandboxError

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# Shown as one line with exit code 2, not a traceback: bad input, a failed step, no sandbox.
# SandboxError is not an agent error: sandbox/ imports nothing from agent/.
USER_ERRORS = (UserError, RunError, SandboxError)


def unconfined_by_surprise(kind: str, sandbox) -> bool:
    """`--sandbox auto` found no engine and fell back to a local subprocess (sandbox.factory):
    LLM-written code must not run there unless the user asked for `--sandbox local` by name."""
    return kind == "auto" and sandbox.name == "local"


UNCONFINED_HINT = "start Docker, or pass --sandbox local to run LLM-written scripts unconfined"


def open_hub(hub: str | None, progress: Callable[[str], None] | None = None):
    """A LocalHub at PATH, `hf` for the Hugging Face Hub, or the demo catalog (built on demand)."""
    if hub == "hf":
        return HfHub()
    if hub:
        return LocalHub(Path(hub))
    return LocalHub(build_demo_hub(progress=progress))
