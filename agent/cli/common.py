"""What every `autoannotator` sub-command shares: consoles, one-line errors, the hub option."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

from agent.store.runstore import InputError

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors() -> tuple[type[BaseException], ...]:
    from agent.committee.selection import SelectionError
    from agent.hub.hubs import HubError
    from agent.llm.client import LLMUnavailable
    from agent.pipeline.annotate import StepFailed
    from sandbox.base import SandboxError

    return (InputError, HubError, LLMUnavailable, SelectionError, SandboxError, StepFailed)


def open_hub(hub: str | None, progress: Callable[[str], None] | None = None):
    """A LocalHub at PATH, `hf` for the Hugging Face Hub, or the demo catalog (built on demand)."""
    from agent.hub.hubs import HfHub, LocalHub

    if hub == "hf":
        return HfHub()
    if hub:
        return LocalHub(Path(hub))
    from agent.hub.demo import build_demo_hub

    return LocalHub(build_demo_hub(progress=progress))


HubOpt = typer.Option(
    None,
    "--hub",
    help="Model hub: a folder of HF-format models, or `hf`. "
    "Default: the bundled demo catalog (built on first use).",
)
