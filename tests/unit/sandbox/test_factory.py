"""make_sandbox and DockerSandbox's device choice."""

from __future__ import annotations

import contextlib
import logging
import pickle
import uuid

import docker.errors
import pytest

from sandbox.base import Limits, SandboxError
from sandbox.docker import RUN_LABEL, DockerSandbox
from sandbox.factory import make_sandbox
from sandbox.image import IMAGE_TAG
from sandbox.local import LocalSandbox


@pytest.fixture
def no_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")


def test_local_is_always_available(no_engine):
    assert isinstance(make_sandbox("local"), LocalSandbox)


def test_docker_without_an_engine_names_the_fix(no_engine):
    with pytest.raises(SandboxError, match=r"no Docker engine answers .*scripts/start-dockerd\.sh"):
        make_sandbox("docker")


def test_auto_without_an_engine_falls_back_to_local(no_engine, caplog):
    with caplog.at_level(logging.WARNING, logger="sandbox.factory"):
        sandbox = make_sandbox("auto")

    assert isinstance(sandbox, LocalSandbox)
    assert "LocalSandbox" in caplog.text


def test_unknown_kind_or_device_is_refused():
    with pytest.raises(ValueError, match="sandbox kind"):
        make_sandbox("podman")
    with pytest.raises(ValueError, match="device"):
        DockerSandbox(client=object(), device="tpu")


@pytest.mark.docker
def test_auto_with_an_engine_is_docker(docker_client):
    sandbox = make_sandbox("auto", device="cpu")

    assert isinstance(sandbox, DockerSandbox)
    assert sandbox.device == "cpu"


@pytest.mark.docker
def test_cuda_falls_back_to_cpu_quoting_the_engine(docker_client, caplog):
    with caplog.at_level(logging.WARNING, logger="sandbox.docker"):
        device = DockerSandbox(docker_client, device="cuda").device

    if device == "cpu":  # an engine without a GPU runtime
        [record] = caplog.records
        assert record.getMessage().startswith("Docker engine cannot give containers a GPU")
        assert "could not select device driver" in record.getMessage()
    else:
        assert device == "cuda"
        assert caplog.records == []


@pytest.mark.docker
def test_a_run_id_labels_containers_and_removes_the_runs_leftovers(docker_client):
    run_id = f"factory-{uuid.uuid4().hex[:8]}"
    stale = docker_client.containers.create(
        IMAGE_TAG, ["/usr/bin/true"], labels={RUN_LABEL: run_id}
    )
    other = docker_client.containers.create(
        IMAGE_TAG, ["/usr/bin/true"], labels={RUN_LABEL: f"{run_id}-other"}
    )
    try:
        sandbox = make_sandbox("docker", device="cpu", run_id=run_id)

        with pytest.raises(docker.errors.NotFound):
            stale.reload()
        other.reload()  # another run's container stays
        assert sandbox._container_options(Limits(), gpu=False)["labels"][RUN_LABEL] == run_id
    finally:
        for container in (stale, other):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


@pytest.mark.docker
def test_a_sandbox_sent_to_a_ray_worker_connects_there_without_the_run_id(docker_client):
    """What the Ray engine ships to a worker: the same sandbox on that machine's engine, which
    never removes the containers of the run it serves (no run id)."""
    sandbox = DockerSandbox(docker_client, device="cpu", run_id=f"r-{uuid.uuid4().hex[:8]}")

    copy = pickle.loads(pickle.dumps(sandbox))

    assert isinstance(copy, DockerSandbox) and copy.client is not sandbox.client
    assert (copy.device, copy.image, copy.run_id) == ("cpu", sandbox.image, None)
