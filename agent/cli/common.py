"""What every `autoannotator` sub-command shares: consoles, one-line errors, the hub."""

from __future__ import annotations

import typer
from rich.console import Console

# The core's, shared by the commands that open a hub or judge a sandbox.
from agent.api import open_hub, unconfined_by_surprise
from agent.errors import RunError, UserError
from sandbox.base import SandboxError

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# Shown as one line with exit code 2, not a traceback: bad input, a failed step, no sandbox.
# SandboxError is not an agent error: sandbox/ imports nothing from agent/.
USER_ERRORS = (UserError, RunError, SandboxError)


UNCONFINED_HINT = "start Docker, or pass --sandbox local to run LLM-written scripts unconfined"

__all__ = ["USER_ERRORS", "console", "fail", "open_hub", "out", "unconfined_by_surprise"]
