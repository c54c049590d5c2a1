"""`autoannotator sandbox ...` (the typer sub-app, mounted here as the lead's cli does)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from agent.cli.sandbox import sandbox_app

app = typer.Typer()
app.add_typer(sandbox_app, name="sandbox")


def test_status_without_an_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")

    result = CliRunner().invoke(app, ["sandbox", "status"])

    assert result.exit_code == 1
    assert result.output.startswith("engine: no (no Docker engine answers")


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
