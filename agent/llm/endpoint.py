"""Which LLM endpoint to talk to: its base URL, key and model, and the chat model for it.

Any OpenAI-compatible endpoint works, named by --llm-base-url / --llm-api-key / --llm-model or
OPENAI_BASE_URL / OPENAI_API_KEY / AUTOANNOTATOR_LLM_MODEL. With neither a URL nor a key set,
`resolve_endpoint` says None and agent.llm.local_server starts a llama.cpp server instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import openai
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI

from agent.errors import RunError, UserError

ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"
ENV_MODEL = "AUTOANNOTATOR_LLM_MODEL"

DEFAULT_REMOTE_MODEL = "gpt-4o-mini"
# Servers that ignore the key (vLLM, Ollama, llama.cpp) still need the client to send one.
PLACEHOLDER_API_KEY = "not-needed"


class LLMUnavailable(UserError, RuntimeError):
    """No LLM can be reached; the message is one line naming what failed and how to fix it."""


class PromptTooLong(RunError, ValueError):
    """The endpoint refused one prompt as longer than its context window: that prompt needs
    less in it, the endpoint itself is fine."""


# How OpenAI and the servers that copy it (llama-cpp-python, vLLM) word a 400 for a prompt past
# the context window; OpenAI and llama-cpp-python also set the code `context_length_exceeded`.
_CONTEXT_EXCEEDED = re.compile(r"context[ _](length|window)|maximum context", re.IGNORECASE)


def is_context_exceeded(err: openai.APIError) -> bool:
    """Whether an error reply says the prompt did not fit the model's context."""
    return isinstance(err, openai.BadRequestError) and (
        err.code == "context_length_exceeded" or bool(_CONTEXT_EXCEEDED.search(str(err)))
    )


@dataclass(frozen=True)
class Endpoint:
    base_url: str | None  # None: the OpenAI client's own default (api.openai.com)
    api_key: str
    model: str
    local: bool = False  # our own llama.cpp server: answers cost nothing

    @property
    def display_url(self) -> str:
        return self.base_url or "https://api.openai.com/v1"


def resolve_endpoint(
    base_url: str | None = None, api_key: str | None = None, model: str | None = None
) -> Endpoint | None:
    """The remote endpoint from flags or environment; None means: start the local server."""
    base_url = base_url or os.environ.get(ENV_BASE_URL) or None
    api_key = api_key or os.environ.get(ENV_API_KEY) or None
    if base_url is None and api_key is None:
        return None
    return Endpoint(
        base_url=base_url.rstrip("/") if base_url else None,
        api_key=api_key or PLACEHOLDER_API_KEY,
        model=model or os.environ.get(ENV_MODEL) or DEFAULT_REMOTE_MODEL,
    )


def check_endpoint(endpoint: Endpoint, timeout_s: float = 10.0) -> None:
    """Raise LLMUnavailable unless the endpoint answers and accepts the key."""
    client = openai.OpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=timeout_s, max_retries=0
    )
    try:
        client.models.list()
    except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
        raise LLMUnavailable(
            f"{endpoint.display_url} refused the API key ({err.status_code}); "
            f"set {ENV_API_KEY} or --llm-api-key to a valid key"
        ) from err
    except openai.NotFoundError:
        pass  # some compatible servers serve chat completions without a model list
    except (openai.APIConnectionError, openai.APIStatusError) as err:
        raise LLMUnavailable(
            f"no answer from the LLM endpoint {endpoint.display_url} ({first_line(err)}); "
            f"start that server, or fix --llm-base-url / {ENV_BASE_URL}, or unset both "
            f"{ENV_BASE_URL} and {ENV_API_KEY} to use the local model"
        ) from err
    # The openai client parses a body that is not its JSON (a web page, a proxy's error) into
    # a bare ValueError or AttributeError: the URL is not an OpenAI-compatible API.
    except (openai.APIResponseValidationError, ValueError, AttributeError) as err:
        raise LLMUnavailable(
            f"{endpoint.display_url} answers, but not as an OpenAI-compatible API "
            f"({first_line(err)}); fix --llm-base-url / {ENV_BASE_URL} (it usually ends in /v1)"
        ) from err


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception as a short single line: a server's error page must not flood the message."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:limit]


def make_chat_model(
    endpoint: Endpoint, timeout_s: float = 180.0, max_retries: int = 3
) -> BaseChatOpenAI:
    """A deterministic chat model for the endpoint; the openai client retries transient errors."""
    # ChatOpenAI renames max_tokens to OpenAI's newer max_completion_tokens, which llama.cpp's
    # server silently ignores; its base class (what langchain's own OpenAI-compatible
    # integrations build on) sends max_tokens as given.
    chat_class = BaseChatOpenAI if endpoint.local else ChatOpenAI
    return chat_class(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        model=endpoint.model,
        temperature=0,
        timeout=timeout_s,
        max_retries=max_retries,
        # LLMClient caches on disk; a global langchain cache would hide calls from the ledger.
        cache=False,
    )
