"""The sandbox tests' Docker fixtures (skip without an engine, fail under CI=true) and the
end-to-end tests' tiny hub."""

from tests.e2e.conftest import hub_dir
from tests.sandbox.conftest import docker_client, docker_sandbox

__all__ = ["docker_client", "docker_sandbox", "hub_dir"]
