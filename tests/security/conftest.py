"""The sandbox tests' Docker fixtures: skip without an engine, fail under CI=true."""

from tests.sandbox.conftest import docker_client, docker_sandbox

__all__ = ["docker_client", "docker_sandbox"]
