"""The end-to-end tests' tiny hub, for the hostile-endpoint tests (the Docker fixtures come from
tests.fixtures.sandbox, a plugin of the root conftest)."""

from tests.e2e.conftest import hub_dir

__all__ = ["hub_dir"]
