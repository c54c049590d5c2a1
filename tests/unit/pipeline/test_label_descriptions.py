"""Label meanings by default: without --label-desc the LLM drafts one line per label from the
task description, once per run, saved in task.json and shown before review starts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from rich.console import Console

import agent.cli.progress
from agent.cli.progress import ProgressView
from agent.domain import LabelsDescribed
from agent.llm.client import LLMClient
from agent.pipeline.review import LLMReviewer, draft_label_descriptions, parse_descriptions
from agent.pipeline.runner import with_label_descriptions
from agent.store.runstore import RunStore
from agent.task import TaskSpec
from tests.fixtures.llm import PromptRecorder

LABELS = ["bearish", "bullish", "neutral"]
DRAFT = (
    "bearish: bad news for the company; the price may fall\n"
    "bullish: good news for the company; the price may rise\n"
    "neutral: neither good nor bad news"
)
DRAFTED = {
    "bearish": "bad news for the company; the price may fall",
    "bullish": "good news for the company; the price may rise",
    "neutral": "neither good nor bad news",
}


def client(tmp_path: Path, answers: list[str], recorder=None) -> LLMClient:
    model = GenericFakeChatModel(messages=iter(answers), callbacks=recorder and [recorder])
    return LLMClient(
        model,
        model="fake",
        cache_path=tmp_path / "llm_cache.sqlite",
        ledger_path=tmp_path / "ledger.jsonl",
    )


@pytest.mark.parametrize(
    "answer",
    [
        DRAFT,
        "Here are the guidelines:\n- **Bearish**: bad news for the company; the price may fall\n"
        "- Bullish (positive): good news for the company; the price may rise\n"
        "- neutral: neither good nor bad news\nHope this helps!",
        "1. bearish: bad news for the company; the price may fall\n2) bullish: good news for "
        "the company; the price may rise\n3. NEUTRAL: neither good nor bad news",
        json.dumps(DRAFTED),
    ],
)
def test_a_meaning_per_label_is_read_from_lines_bullets_or_json(answer):
    assert parse_descriptions(answer, LABELS, {"bullish": "positive"}) == DRAFTED


def test_the_label_words_name_a_label_too():
    answer = "negative: falls\npositive: rises\nneutral: neither"
    words = {"bearish": "negative", "bullish": "positive"}
    assert parse_descriptions(answer, LABELS, words) == {
        "bearish": "falls",
        "bullish": "rises",
        "neutral": "neither",
    }


@pytest.mark.parametrize(
    "answer",
    ["bearish: falls\nbullish: rises", "I cannot help with that.", "", "bearish:\nbullish: x"],
)
def test_a_draft_that_misses_a_label_gives_none(answer):
    assert parse_descriptions(answer, LABELS) == {}


def test_the_draft_prompt_gives_the_task_and_the_labels(tmp_path):
    recorder = PromptRecorder()
    llm = client(tmp_path, [DRAFT], recorder)
    drafted = draft_label_descriptions(
        llm, "sentiment of financial news", LABELS, {"bearish": "negative"}
    )
    assert drafted == DRAFTED
    [(system, user)] = recorder.prompts
    assert "one short line per label" in system.content
    assert "Task: sentiment of financial news" in user.content
    assert "Labels: bearish (negative), bullish, neutral" in user.content
    [entry] = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert entry["purpose"] == "label-descriptions"


def make_store(tmp_path: Path, **task_fields) -> RunStore:
    task = TaskSpec(
        description="sentiment of financial news", labels=LABELS, data_path="x.csv", **task_fields
    )
    rows = pd.DataFrame({"row": [0], "id": ["0"], "text": ["Shares fell"]})
    return RunStore.create(tmp_path / "run", task, rows)


def test_drafted_once_saved_in_task_json_and_shown_before_review(tmp_path):
    store = make_store(tmp_path)
    events = []
    task = with_label_descriptions(store.task(), store, client(tmp_path, [DRAFT]), events.append)

    assert task.label_descriptions == DRAFTED and task.label_descriptions_drafted
    saved = store.task()
    assert saved.label_descriptions == DRAFTED and saved.label_descriptions_drafted
    assert events == [LabelsDescribed(DRAFTED, str(store.task_path))]
    # A resumed run finds them in task.json (a person may have corrected them): no new call.
    corrected = {**DRAFTED, "neutral": "no news for the price"}
    saved.model_copy(update={"label_descriptions": corrected}).save(store.task_path)
    resumed = with_label_descriptions(store.task(), store, client(tmp_path, []), events.append)
    assert resumed.label_descriptions == corrected
    assert events[-1] == LabelsDescribed(corrected, str(store.task_path))
    # The reviewer built from the task shows them to the LLM.
    reviewer = LLMReviewer(client(tmp_path, []), LABELS, resumed.description,
                           label_descriptions=resumed.label_descriptions)  # fmt: skip
    system = reviewer.messages_for("x")[0].content
    assert "What the labels mean:\n- bearish: bad news" in system
    assert "- neutral: no news for the price" in system


@pytest.mark.parametrize(
    "fields",
    [
        {"label_descriptions": {"bearish": "falls"}},  # the user's own (--label-desc)
        {"draft_label_descriptions": False},  # --no-draft-label-desc
        {"reviewer": "human"},
        {"reviewer": "none"},
    ],
)
def test_no_draft_when_the_user_gave_meanings_turned_it_off_or_no_llm_reviews(tmp_path, fields):
    store = make_store(tmp_path, **fields)
    events = []
    before = store.task_path.read_text()
    task = with_label_descriptions(store.task(), store, client(tmp_path, []), events.append)
    assert task == store.task() and store.task_path.read_text() == before
    assert events == [] and not (tmp_path / "ledger.jsonl").exists()


def test_an_unusable_draft_leaves_the_labels_bare(tmp_path):
    store = make_store(tmp_path)
    events = []
    task = with_label_descriptions(
        store.task(), store, client(tmp_path, ["Sure! What is the task?"]), events.append
    )
    assert task.label_descriptions == {} and not task.label_descriptions_drafted
    assert store.task().label_descriptions == {} and events == []


def test_the_run_output_shows_the_draft_and_where_to_edit_it(monkeypatch):
    screen = Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(agent.cli.progress, "console", screen)
    with ProgressView(quiet=False) as view:
        view(LabelsDescribed(DRAFTED, "runs/r/task.json"))
    out = screen.file.getvalue()
    assert "label meanings the LLM drafted" in out and "runs/r/task.json" in out
    assert "  bearish: bad news for the company; the price may fall" in out
