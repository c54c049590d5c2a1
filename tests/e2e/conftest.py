from tests.sandbox.conftest import docker_client, docker_sandbox

__all__ = ["docker_client", "docker_sandbox"]
