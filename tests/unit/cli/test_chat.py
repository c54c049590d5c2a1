"""The chat's task form: the LLM's reading, hand edits, questions back, the estimate."""

from __future__ import annotations

import importlib.util
import io
import os

import pytest
from rich.console import Console

from agent.cli.chat import ChatSession, Form, SpecDraft, SpecReader, estimate
from agent.llm.endpoint import Endpoint, make_chat_model
from agent.llm.local_server import open_endpoint
from agent.llm.pricing import Price
from agent.store.runstore import InputError
from tests.fixtures.chat import FakeChatLLM


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "tweets.csv"
    path.write_text("tweet,gold\ngood day,positive\nbad day,negative\n,neutral\n", encoding="utf-8")
    return path


@pytest.fixture
def fake():
    with FakeChatLLM() as server:
        yield server


def chat_model(fake):
    return make_chat_model(Endpoint(fake.base_url, "test", "fake"), max_retries=0)


def session(model, screen):
    return ChatSession(screen, model, make_options=lambda run_dir: None, price=Price(0.15, 0.60))


def test_the_llm_fills_the_form_from_a_request(fake, data):
    reader = SpecReader(chat_model(fake))
    draft = reader.read(
        SpecDraft(), f"label {data} for sentiment, positive/negative, spend at most $2"
    )
    assert draft == SpecDraft(
        data_path=str(data),
        labels=["positive", "negative"],
        description="sentiment of short texts",
        max_cost_usd=2.0,
    )
    # A later turn keeps what was said and adds to it.
    again = reader.read(draft, "I will review the hard ones myself")
    assert again.reviewer == "human" and again.labels == ["positive", "negative"]


def test_an_unreadable_answer_leaves_the_form_to_hand_edits(fake, data):
    out = io.StringIO()
    chat = session(chat_model(fake), Console(file=out, width=200))
    chat.handle("nonsense")
    assert "could not read that" in out.getvalue()
    assert chat.form.draft == SpecDraft()


def test_the_session_asks_for_what_is_missing_then_shows_the_form(fake, data):
    out = io.StringIO()
    chat = session(chat_model(fake), Console(file=out, width=200))
    chat.handle(f"label {data} for sentiment, positive/negative/neutral, at most $2")
    # The file has no `text` column, so the session asks which one holds the text.
    assert "Which column holds the text? Columns: tweet, gold" in out.getvalue()
    assert not chat.confirming
    chat.handle("column=tweet; k=2")
    assert chat.confirming
    screen = out.getvalue()
    assert "Run it?" in screen and "2 rows to label in 1 chunks" in screen
    assert "at most 2 LLM review calls" in screen
    task = chat.form.task()
    assert (task.text_column, task.k) == ("tweet", 2)
    assert task.labels == ["positive", "negative", "neutral"]
    chat.handle("n")
    assert not chat.confirming and chat.form.draft == SpecDraft()


def test_without_an_llm_the_form_is_filled_by_hand(data):
    out = io.StringIO()
    chat = session(None, Console(file=out, width=200))
    chat.handle("label my tweets please")
    assert "No LLM here" in out.getvalue()
    assert "Which file" in out.getvalue()
    chat.handle(f"data={data}; column=tweet; labels=good/bad; task=tone of tweets; reviewer=human")
    assert chat.confirming
    assert chat.form.task().reviewer == "human"
    assert "at most 0 LLM review calls" in out.getvalue()


@pytest.mark.parametrize("taken", [False, True])
def test_each_run_gets_the_options_of_its_own_directory(data, tmp_path, taken):
    """The run's options (its sandbox, named by the run id) are made for its directory, and
    only once that directory is known to be free."""
    asked = []

    def make_options(run_dir):
        asked.append(run_dir)
        raise InputError("stopped before the run")

    out = io.StringIO()
    run_dir = tmp_path / "job"
    if taken:
        run_dir.mkdir()
        (run_dir / "task.json").write_text("{}", encoding="utf-8")
    chat = ChatSession(Console(file=out, width=200), None, make_options, run_dir=run_dir)
    chat.handle(f"data={data}; column=tweet; labels=good,bad; task=tone of tweets")
    chat.handle("y")

    if taken:
        assert asked == [] and "run directory already exists" in out.getvalue()
    else:
        assert asked == [run_dir] and "stopped before the run" in out.getvalue()
    assert chat.store is None


def test_hand_edits_report_unknown_fields_and_bad_values():
    form = Form()
    errors = form.edit("colour=red; reviewer=robot; budget=3")
    assert errors[0].startswith("unknown field 'colour'")
    assert errors[1].startswith("reviewer:")
    assert form.draft.max_cost_usd == 3.0


def test_the_budget_becomes_the_runs_cost_cap(data):
    form = Form()
    form.edit(f"data={data}; column=tweet; labels=a,b; task=tone; budget=2")
    assert form.task().max_cost_usd == 2.0


def test_estimate_is_the_worst_case_of_every_row_reviewed(data):
    form = Form()
    form.edit(f"data={data}; column=tweet; labels=a,b; task=tone")
    numbers = estimate(form.task(), Price(0.15, 0.60))
    assert numbers["labelable"] == 2 and numbers["max_review_calls"] == 2
    assert numbers["max_cost_usd"] == pytest.approx(2 * (160 * 0.15 + 4 * 0.60) / 1e6)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None and os.environ.get("CI") != "true",
    reason="needs llama-cpp-python (scripts/install.sh llm)",
)
@pytest.mark.timeout(900)
def test_the_local_model_fills_the_form(monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with open_endpoint(n_threads=1) as endpoint:
        reader = SpecReader(make_chat_model(endpoint))
        draft = reader.read(
            SpecDraft(),
            "label data/tweets.csv for sentiment, positive/negative/neutral, spend at most $2",
        )
        later = reader.read(draft, "I want to label the hard ones myself")
    assert draft.data_path == "data/tweets.csv"
    assert draft.labels == ["positive", "negative", "neutral"]
    assert draft.max_cost_usd == 2.0
    assert later.reviewer == "human" and later.data_path == "data/tweets.csv"


def test_the_label_map_is_a_form_field_and_the_chat_option_presets_it(data):
    form = Form()
    assert form.edit("label_map=negative") == [
        "label_map takes MODEL_LABEL=TASK_LABEL or MODEL_ID:MODEL_LABEL=TASK_LABEL, not 'negative'"
    ]
    form.edit(f"data={data}; column=tweet; labels=bearish,bullish; task=market mood")
    assert form.edit("map=negative=bearish,org/m:LABEL_1=bullish") == []
    task = form.task()
    assert task.label_map == {"negative": "bearish"}
    assert task.model_label_maps == {"org/m": {"LABEL_1": "bullish"}}

    out = io.StringIO()
    preset = {"label_map": {"positive": "bullish"}, "model_label_maps": {}}
    chat = ChatSession(Console(file=out, width=200), None, lambda run_dir: None, preset=preset)
    chat.handle(f"data={data}; column=tweet; labels=bearish,bullish; task=market mood")
    assert chat.confirming and "positive=bullish" in out.getvalue()
    chat.handle("n")  # a new form starts from the preset again
    assert chat.form.settings["label_map"] == {"positive": "bullish"}


def test_a_failed_selection_brings_the_form_back_with_the_fix(data, tmp_path, monkeypatch):
    import agent.cli.chat as chat_module
    from agent.committee.selection import SelectionError
    from agent.pipeline.runner import RunOptions

    def no_committee(store, options, *, resume):
        raise SelectionError(
            "only 0 of the k=1 models needed on hub 'local' can do bearish, bullish; fix: "
            "--label-map negative=bearish,positive=bullish",
            "every candidate: org/m: cannot predict bearish, bullish",
            {"label_map": "negative=bearish,positive=bullish"},
        )

    monkeypatch.setattr(chat_module, "preflight", lambda task, options: None)
    monkeypatch.setattr(chat_module, "run_graph", no_committee)
    out = io.StringIO()
    options = RunOptions(hub=None, sandbox=None)
    chat = ChatSession(Console(file=out, width=300), None, lambda run_dir: options)
    chat.run_dir = tmp_path / "first"
    chat.handle(f"data={data}; column=tweet; labels=bearish,bullish; task=market mood; k=1")
    chat.handle("y")
    screen = out.getvalue()
    assert "only 0 of the k=1 models needed" in screen and "every candidate: org/m" in screen
    assert "Fix the form (`label_map=negative=bearish,positive=bullish`)" in screen
    # The form is back as it was, waiting for the fix; the failed run is left behind.
    assert chat.confirming and chat.store is None
    assert chat.form.task().labels == ["bearish", "bullish"] and chat.form.task().k == 1
    chat.handle("label_map=negative=bearish,positive=bullish")
    assert chat.form.task().label_map == {"negative": "bearish", "positive": "bullish"}
    assert chat.confirming
