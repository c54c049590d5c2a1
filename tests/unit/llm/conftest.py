"""The LLM tests' environment: no endpoint or GGUF set, whatever the machine running them has."""

import pytest

from agent.llm.endpoint import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL
from agent.llm.local_server import ENV_GGUF


@pytest.fixture
def no_llm_env(monkeypatch):
    for name in (ENV_BASE_URL, ENV_API_KEY, ENV_MODEL, ENV_GGUF):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
