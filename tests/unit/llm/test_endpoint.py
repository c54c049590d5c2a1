import ast
import re
import socket
from pathlib import Path

import pytest
import typer

from agent.cli.app import app
from agent.llm import endpoint as endpoint_module
from agent.llm.endpoint import (
    DEFAULT_REMOTE_MODEL,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    PLACEHOLDER_API_KEY,
    Endpoint,
    LLMUnavailable,
    check_endpoint,
    make_chat_model,
    resolve_endpoint,
)

LLM_PACKAGE = Path(endpoint_module.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")


def test_no_endpoint_configured_means_local_server(no_llm_env):
    assert resolve_endpoint() is None


def test_base_url_alone_gets_a_placeholder_key_and_the_default_model(no_llm_env):
    no_llm_env.setenv(ENV_BASE_URL, "http://gpu-box:8000/v1/")
    endpoint = resolve_endpoint()
    assert endpoint == Endpoint("http://gpu-box:8000/v1", PLACEHOLDER_API_KEY, DEFAULT_REMOTE_MODEL)


def test_flags_override_environment(no_llm_env):
    no_llm_env.setenv(ENV_API_KEY, "env-key")
    no_llm_env.setenv(ENV_MODEL, "env-model")
    endpoint = resolve_endpoint(api_key="flag-key", model="flag-model")
    assert endpoint == Endpoint(None, "flag-key", "flag-model")
    assert endpoint.display_url == "https://api.openai.com/v1"


def test_chat_model_is_deterministic_and_retries():
    model = make_chat_model(Endpoint("http://127.0.0.1:1/v1", "k", "m"), max_retries=5)
    assert (model.temperature, model.max_retries, model.model_name) == (0, 5, "m")
    assert model.openai_api_base == "http://127.0.0.1:1/v1"


def test_check_endpoint_names_the_url_and_the_fix_when_nothing_answers():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(LLMUnavailable) as raised:
            check_endpoint(Endpoint(url, "k", "m"), timeout_s=2)
    message = str(raised.value)
    assert url in message and ENV_BASE_URL in message
    assert "\n" not in message


def flags_named_in_errors(source: str) -> set[str]:
    """The --flags in the strings of `source`'s raise statements and exception docstrings."""
    texts = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise):
            texts += [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
        elif isinstance(node, ast.ClassDef) and node.name.endswith(("Unavailable", "Exhausted")):
            texts.append(ast.get_docstring(node) or "")
    return {flag for text in texts if isinstance(text, str) for flag in FLAG.findall(text)}


def test_every_flag_an_llm_error_names_is_a_flag_of_the_cli():
    named = set()
    for source in LLM_PACKAGE.glob("*.py"):
        named |= flags_named_in_errors(source.read_text())
    command = typer.main.get_command(app)
    flags = {
        option for sub in command.commands.values() for param in sub.params for option in param.opts
    }
    assert {"--llm-base-url", "--llm-api-key", "--max-llm-calls", "--max-cost"} <= named
    assert named <= flags, f"not flags of any command: {sorted(named - flags)}"
