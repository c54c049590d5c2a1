"""`autoannotator sandbox ...` (the typer sub-app, mounted here as the lead's cli does)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from agent.cli.sandbox import sandbox_app

app = typer.Typer()
app.add_typer(sandbox_app, name="sandbox")


@pytest.mark.parametrize("command", ["status", "build-image"])
def test_without_an_engine_one_line_exit_2(monkeypatch, command):
    """No engine is the user's to fix (README: exit code 2), said in one line with the fix."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")

    result = CliRunner().invoke(app, ["sandbox", command])

    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: no Docker engine answers")
    assert "scripts/start-dockerd.sh" in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.docker
def test_build_image_then_status(docker_client):
    runner = CliRunner()

    built = runner.invoke(app, ["sandbox", "build-image"])
    status = runner.invoke(app, ["sandbox", "status"])

    assert built.exit_code == 0, built.output
    tag, image = built.output.split()
    assert status.exit_code == 0, status.output
    assert f"image: {tag} {image}" in status.output
    assert "gpu runtime: " in status.output
