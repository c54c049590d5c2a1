"""Sandboxes for the sandbox tests.

Docker tests need an engine. Without one they skip on a developer machine, but with CI=true
a missing engine is a failure: CI must prove the Docker path, never quietly skip it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sandbox.base import SandboxError
from sandbox.docker import DockerSandbox, connect
from sandbox.local import LocalSandbox


@pytest.fixture(scope="session")
def docker_client():
    try:
        return connect()
    except SandboxError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI=true but {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def docker_sandbox(docker_client) -> DockerSandbox:
    return DockerSandbox(docker_client, device="auto")


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def sandbox(request):
    if request.param == "local":
        return LocalSandbox()
    return request.getfixturevalue("docker_sandbox")


@pytest.fixture
def make_script(tmp_path):
    """Write a script (dedented source) under tmp_path/scripts and return its path."""

    def write(source: str, name: str = "script.py") -> Path:
        path = tmp_path / "scripts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        return path

    return write
