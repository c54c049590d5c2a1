"""What every `autoannotator` sub-command shares: consoles, one-line errors, the hub option."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from agent.runstore import InputError

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors() -> tuple[type[BaseException], ...]:
    from agent.annotate import StepFailed
    from agent.hub import HubError
    from agent.llm import LLMUnavailable
    from agent.selection import SelectionError
    from sandbox.base import SandboxError

    return (InputError, HubError, LLMUnavailable, SelectionError, SandboxError, StepFailed)


def unconfined_by_surprise(kind: str, sandbox) -> bool:
    """`--sandbox auto` found no engine and fell back to a local subprocess (sandbox.factory):
    LLM-written code must not run there unless the user asked for `--sandbox local` by name."""
    return kind == "auto" and sandbox.name == "local"


UNCONFINED_HINT = "start Docker, or pass --sandbox local to run LLM-written scripts unconfined"


def open_hub(hub: str | None, progress: Callable[[str], None] | None = None):
    """A LocalHub at PATH, `hf` for the Hugging Face Hub, or the demo catalog (built on demand)."""
    from agent.hub import HfHub, LocalHub

    if hub == "hf":
        return HfHub()
    if hub:
        return LocalHub(Path(hub))
    from agent.demo_hub import build_demo_hub

    return LocalHub(build_demo_hub(progress=progress))


HubOpt = typer.Option(
    None,
    "--hub",
    help="Model hub: a folder of HF-format models, or `hf`. "
    "Default: the bundled demo catalog (built on first use).",
)
