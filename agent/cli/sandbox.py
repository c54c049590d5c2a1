"""`autoannotator sandbox ...`: build the Docker sandbox image, show the engine's state.

No engine, or one that refuses the build, is the user's to fix: one line, exit code 2.
"""

from __future__ import annotations

import typer

from agent.cli.common import fail
from sandbox.base import SandboxError
from sandbox.docker import DockerSandbox, connect
from sandbox.image import IMAGE_TAG, build_image, image_id

sandbox_app = typer.Typer(help="The Docker sandbox: build its image, check the engine.")


def _fail(exc: SandboxError) -> None:
    fail(" ".join(str(exc).split()))  # one line, whatever the engine's message holds


@sandbox_app.command("build-image")
def build_image_command(
    force: bool = typer.Option(False, "--force", help="Rebuild even when up to date."),
) -> None:
    """Build the sandbox image (no registry needed; a no-op when it is up to date)."""
    try:
        image = build_image(connect(), force=force)
    except SandboxError as exc:
        _fail(exc)
    typer.echo(f"{IMAGE_TAG} {image}")


@sandbox_app.command("status")
def status_command() -> None:
    """Whether a Docker engine answers, the sandbox image id, and whether GPUs are usable."""
    try:
        client = connect()
    except SandboxError as exc:
        _fail(exc)
    typer.echo(f"engine: yes (Docker {client.version().get('Version', '?')})")
    typer.echo(f"image: {IMAGE_TAG} {image_id(client) or 'missing (built on first use)'}")
    gpu = DockerSandbox(client, device="auto").device == "cuda"
    typer.echo(f"gpu runtime: {'yes' if gpu else 'no'}")
