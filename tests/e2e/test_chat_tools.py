"""The chat's tools answer from the run directory: counts, scripts, selection, examples, cost."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from rich.console import Console

from agent.cli import chat_tools
from agent.cli.chat import ChatSession, answer_question
from agent.llm.endpoint import Endpoint, make_chat_model
from agent.pipeline.runner import create_run, run_graph
from agent.task import TaskSpec
from tests.fixtures.chat import FakeChatLLM
from tests.fixtures.keywords import LABELS, WORDS, write_data
from tests.fixtures.llm import FakeOpenAI
from tests.fixtures.runs import fake_llm_options


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory, hub_dir):
    root = tmp_path_factory.mktemp("chat-tools")
    data = write_data(root / "data.csv", 30)
    task = TaskSpec(
        description="sentiment of short texts",
        labels=LABELS,
        data_path=str(data),
        chunk_size=16,
        beta=1000,
        max_length=32,
    )
    store = create_run(task, root / "run")
    with FakeOpenAI(LABELS, WORDS) as fake:
        options = fake_llm_options(fake, hub_dir)
        run_graph(store, options, resume=False)
    return store


def models_of(store) -> list[dict]:
    return json.loads(store.models_path.read_text())["models"]


def test_status_and_usage_match_the_run_files(llm_run):
    status = chat_tools.run_status(llm_run)
    metrics = json.loads(llm_run.metrics_path.read_text())
    assert status["finished"] and status["labels_by_source"] == metrics["by_source"]
    assert status["chunks_voted"] == status["chunks_cut"] == llm_run.n_chunks() >= 2
    assert status["rows_not_yet_in_a_chunk"] == 0
    usage = chat_tools.llm_usage(llm_run)
    ledger = llm_run.ledger_path.read_text().splitlines()
    # A remote endpoint reviews 20 samples per call: every call here is a review batch, but
    # the one that drafted what the labels mean.
    by_purpose = usage["calls_by_purpose"]
    assert by_purpose["label-descriptions"] == 1
    assert usage["calls"] == len(ledger) == by_purpose["review-batch"] + 1
    assert usage["rows_labeled_by_llm"] == metrics["by_source"]["llm"]
    assert usage["rows_sent_to_review"] == metrics["escalated"]


def test_scripts_selection_and_examples(llm_run):
    models = models_of(llm_run)
    second = chat_tools.show_script(llm_run, "annotate", "2")
    assert second["slug"] == models[1]["slug"]
    # What the local model is shown: the script, cut to what its context leaves room for.
    text = (llm_run.root / second["path"]).read_text()
    assert second["source"] == text[: chat_tools.MAX_SCRIPT_CHARS]
    assert second["truncated"] == (len(text) > chat_tools.MAX_SCRIPT_CHARS)
    assert "error" in chat_tools.show_script(llm_run, "train")
    selection = chat_tools.model_selection(llm_run)
    assert [m["id"] for m in selection["committee"]] == [m["id"] for m in models]
    examples = chat_tools.hard_examples(llm_run, 3)
    hard = pd.read_parquet(llm_run.hard_chunk(0))
    assert [e["id"] for e in examples] == hard["id"].head(3).tolist()
    assert all(e["text"].startswith("the day was") and e["source"] == "llm" for e in examples)


def test_questions_go_through_tools(llm_run):
    with FakeChatLLM() as fake:
        model = make_chat_model(Endpoint(fake.base_url, "test", "fake"), max_retries=0)
        answer = answer_question(model, llm_run, "what did this cost?")
        script = answer_question(model, llm_run, "show me the annotate script of model 2")
    assert fake.tool_calls == ["llm_usage", "show_script"]
    usage = json.loads(answer.removeprefix("From the run: "))
    assert usage["calls"] == chat_tools.llm_usage(llm_run)["calls"]
    shown = json.loads(script.removeprefix("From the run: "))
    assert shown["slug"] == models_of(llm_run)[1]["slug"] and "def main" in shown["source"]


def test_slash_commands_need_no_llm(llm_run):
    out = io.StringIO()
    chat = ChatSession(Console(file=out, width=200), None, make_options=lambda run_dir: None)
    chat.handle("/status")
    assert "No run yet" in out.getvalue()
    chat.handle(f"/open {llm_run.root}")
    for line in ("/status", "/models", "/scripts", "/report", "/review", "/help"):
        assert chat.handle(line)
    screen = out.getvalue()
    assert '"finished": true' in screen
    assert "scripts/annotate/tiny__sentiment-0.py" in screen
    assert "AutoAnnotator report" in screen
    assert "no hard samples need a human here" in screen  # the LLM labeled them all
    chat.handle("how many went to the LLM?")
    assert "No LLM here to answer questions" in out.getvalue()
    assert chat.handle("/quit") is False
