"""make_sandbox: pick the sandbox a run uses, Docker when an engine answers."""

from __future__ import annotations

import logging

from sandbox.base import Sandbox, SandboxError
from sandbox.docker import DockerSandbox, connect
from sandbox.local import LocalSandbox

log = logging.getLogger(__name__)

KINDS = ("docker", "local", "auto")


def make_sandbox(kind: str = "auto", device: str = "auto", run_id: str | None = None) -> Sandbox:
    """kind: docker (an engine must answer), local (a subprocess), auto (docker if it can).

    `device` (auto|cpu|cuda) is for Docker, which asks the engine for the GPUs; a
    LocalSandbox script sees whatever devices the host has. `run_id` labels Docker's
    containers; the agent passes it on start and on resume, so that the containers a
    killed runner left behind are removed then (DockerSandbox.remove_stale).
    """
    if kind not in KINDS:
        raise ValueError(f"sandbox kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "local":
        return LocalSandbox()
    try:
        client = connect()
    except SandboxError as exc:
        if kind == "docker":
            raise
        log.warning("%s; running scripts in a LocalSandbox, which isolates far less", exc)
        return LocalSandbox()
    return DockerSandbox(client, device=device, run_id=run_id)
