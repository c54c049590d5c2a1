"""OpenAI's Batch API for review (`--review-batch-api`): a chunk's opening requests sent as one
job, at the provider's batch price, answered within its completion window.

Why ahead of the review rather than instead of it: a reviewer's answers depend on one another
only where a first answer needs a follow-up (a sample a batch answer missed, a reminder, a
prompt past the context window); its opening requests do not. So `LLMClient.prefetch` sends
those in one job and puts every answer in the run's answer cache, and the reviewer then runs as
it always does, finds them there, and asks the few follow-ups as ordinary calls. Order, cache,
ledger and budget are those of the ordinary path.

Resume: the job's id is written to the run directory (`batches/<digest>.json`, the digest of
its requests' cache keys) before the first poll, so a run killed while the provider works picks
the same job up again rather than paying for a second one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import openai
from langchain_core.messages import BaseMessage
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_exponential

from agent.llm.endpoint import LLMUnavailable, first_line
from agent.store.runstore import read_json, write_json

# What batch requests cost against the same requests one by one: OpenAI's Batch API (and the
# OpenAI-compatible providers that copied it) bill half.
BATCH_PRICE_SHARE = 0.5
COMPLETION_WINDOW = "24h"
CHAT_COMPLETIONS = "/v1/chat/completions"
FINISHED = {"completed", "failed", "expired", "cancelled"}
# Polls start this many seconds apart and back off to MAX_POLL_S; past POLL_TIMEOUT_S the run
# stops with the job still kept, and `resume` waits for it again.
FIRST_POLL_S, MAX_POLL_S, POLL_TIMEOUT_S = 2.0, 300.0, 24 * 3600.0
_ROLES = {"system": "system", "human": "user", "ai": "assistant"}  # BaseMessage.type -> role


@dataclass(frozen=True)
class Request:
    """One chat completion as the client would ask it: what, why, and how long an answer."""

    messages: Sequence[BaseMessage]
    purpose: str
    max_tokens: int | None = None
    top_logprobs: int | None = None


@dataclass(frozen=True)
class Polling:
    first_s: float = FIRST_POLL_S
    max_s: float = MAX_POLL_S
    timeout_s: float = POLL_TIMEOUT_S


def request_body(model: str, request: Request) -> dict:
    """The chat completions body of `request`, as the ordinary call sends it (temperature 0)."""
    body: dict = {
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": _ROLES[message.type], "content": message.content}
            for message in request.messages
        ],
    }
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.top_logprobs is not None:
        body.update(logprobs=True, top_logprobs=request.top_logprobs)
    return body


def run_batch(
    client: openai.OpenAI, bodies: dict[str, dict], state_path: Path, polling: Polling
) -> dict[str, dict]:
    """custom_id -> the chat completion of each request the provider answered (status 200),
    after submitting `bodies` (custom_id -> chat completions body) as one job, or picking up the
    job `state_path` names, and waiting for it. A request that failed is left out: the caller
    asks it as an ordinary call."""
    state = read_json(state_path) if state_path.is_file() else None
    if state is None:
        lines = [
            {"custom_id": key, "method": "POST", "url": CHAT_COMPLETIONS, "body": body}
            for key, body in bodies.items()
        ]
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        try:
            upload = client.files.create(
                file=(state_path.with_suffix(".jsonl").name, data.encode("utf-8")),
                purpose="batch",
            )
            job = client.batches.create(
                input_file_id=upload.id,
                endpoint=CHAT_COMPLETIONS,
                completion_window=COMPLETION_WINDOW,
            )
        except openai.APIError as err:
            raise LLMUnavailable(
                f"the LLM endpoint refused a batch job ({first_line(err)}); does it offer "
                "OpenAI's Batch API? Without --review-batch-api the review asks call by call"
            ) from err
        state = {"batch_id": job.id, "requests": len(bodies)}
        write_json(state, state_path)
    job = _wait(client, str(state["batch_id"]), polling)
    if job.status != "completed" or job.output_file_id is None:
        state_path.unlink()  # a job that ended without answers is not picked up again
        raise LLMUnavailable(
            f"batch job {job.id} ended {job.status} ({_errors(job)}); `autoannotator resume` "
            "submits the requests again"
        )
    answered = {}
    for line in client.files.content(job.output_file_id).text.splitlines():
        if not line.strip():
            continue
        result = json.loads(line)
        response = result.get("response") or {}
        if response.get("status_code") == 200 and isinstance(response.get("body"), dict):
            answered[str(result.get("custom_id"))] = response["body"]
    return answered


def _wait(client: openai.OpenAI, batch_id: str, polling: Polling):
    retrying = Retrying(
        retry=retry_if_result(lambda job: job.status not in FINISHED),
        wait=wait_exponential(multiplier=polling.first_s, max=polling.max_s),
        stop=stop_after_delay(polling.timeout_s),
    )
    try:
        return retrying(client.batches.retrieve, batch_id)
    except RetryError as err:
        raise LLMUnavailable(
            f"batch job {batch_id} is not finished after {polling.timeout_s:.0f} s; it is kept: "
            "`autoannotator resume` waits for it again"
        ) from err


def _errors(job) -> str:
    errors = getattr(job, "errors", None)
    found = [e.message for e in (errors.data or [])] if errors is not None else []
    return "; ".join(m for m in found if m) or "no error given"
