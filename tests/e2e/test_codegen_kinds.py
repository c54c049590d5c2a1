"""A run whose committee holds a model only an LLM-written script can run (issue 17).

The keyword world (tests.fixtures.keywords) with one member saved the SetFit way, an encoder
and a linear head beside it, which the templates cannot run; the LLM is a loopback fake that
labels like the other fakes and, asked for one model's annotate section, answers with the one
that runs it. `--codegen auto` must verify the templates of the two ordinary members and the
template that deploys the third whole, ask for exactly that model's section, and the script
must then label every row.
"""

from __future__ import annotations

import pandas as pd

from agent.pipeline.runner import create_run, run_graph
from agent.store.runstore import read_json
from agent.task import TaskSpec
from tests.fixtures.keywords import LABELS, MISSED_WORDS, PROBE_WORDS, WORDS, write_data
from tests.fixtures.llm import FakeOpenAI
from tests.fixtures.models import (
    KEYWORD_EMBEDDING_SECTION,
    make_keyword_classifier,
    make_keyword_embedding_model,
)
from tests.fixtures.runs import fake_llm_options

DEPLOY_REQUEST = "Write the deploy script for ONE model"
ANNOTATE_REQUEST = "Write the model section of an annotate script for ONE model"


class ScriptWritingLLM(FakeOpenAI):
    """Labels like FakeOpenAI; asked for one model's annotate section, writes it."""

    def answer(self, prompt: str) -> str:
        if ANNOTATE_REQUEST in prompt:
            return f"```python\n{KEYWORD_EMBEDDING_SECTION}```"
        return super().answer(prompt)


def keyword_hub(root):
    """Two ordinary keyword models and one encoder-with-head model, each missing other words."""
    for index, missed in enumerate(MISSED_WORDS):
        keywords = {
            label: PROBE_WORDS[label]
            + [w for w, y in WORDS.items() if y == label and w not in missed]
            for label in PROBE_WORDS
        }
        make = make_keyword_embedding_model if index == 2 else make_keyword_classifier
        name = "tiny__encoder-head" if index == 2 else f"tiny__sentiment-{index}"
        make(
            root / name,
            LABELS,
            keywords,
            "neutral",
            front_matter={"base_model": f"tiny/base-{index}", "datasets": [f"set-{index}"]},
        )
    return root


def keyword_run(tmp_path):
    """(hub, data, run): the three-member keyword hub, 32 rows, a run of k = 3 over them."""
    hub = keyword_hub(tmp_path / "hub")
    data = write_data(tmp_path / "data.csv", 32)
    task = TaskSpec(
        description="sentiment of short texts",
        labels=LABELS,
        data_path=str(data),
        gold_column="gold",
        beta=1000,  # no fine-tuning: these runs are about the scripts
        chunk_size=16,
        max_length=32,
        k=3,
    )
    return hub, data, create_run(task, tmp_path / "run")


def test_a_model_only_an_llm_written_script_can_run_labels_every_row(tmp_path):
    hub, data, store = keyword_run(tmp_path)
    with ScriptWritingLLM(LABELS, WORDS) as llm:
        run_graph(store, fake_llm_options(llm, hub), resume=False)
        asked = [p for p in llm.requests if DEPLOY_REQUEST in p or ANNOTATE_REQUEST in p]

    committee = {m.id: m for m in store.committee()}
    assert set(committee) == {"tiny/sentiment-0", "tiny/sentiment-1", "tiny/encoder-head"}
    assert committee["tiny/encoder-head"].kind == "embedding-head"
    # One request, for its annotate section: its deploy is the template that copies its files.
    assert len(asked) == 1 and ANNOTATE_REQUEST in asked[0]
    assert all("tiny/encoder-head" in p and "tiny/sentiment" not in p for p in asked)
    manifest = read_json(store.scripts_manifest_path)["scripts"]
    origins = {(e["role"], e["model"]): (e["origin"], e["status"]) for e in manifest}
    for model in ("tiny/sentiment-0", "tiny/sentiment-1"):
        for role in ("deploy", "annotate", "finetune"):
            assert origins[(role, model)] == ("template", "template-verified")
    assert origins[("deploy", "tiny/encoder-head")] == ("template", "template-verified")
    assert origins[("annotate", "tiny/encoder-head")] == ("llm", "passed-first-try")
    assert ("finetune", "tiny/encoder-head") not in origins

    # Its script voted on every row with a text, and its votes are the keyword labels.
    rows = pd.read_csv(data, keep_default_na=False)
    votes = pd.concat(
        pd.read_parquet(store.model_votes("tiny__encoder-head", c)) for c in range(store.n_chunks())
    )
    texts = rows[rows["text"] != ""]
    assert sorted(votes["id"].astype(int)) == texts.index.tolist()
    labels = pd.read_parquet(store.labels_path)
    assert len(labels) == len(rows)
    agree = votes.set_index("id")["label"] == texts.set_index(texts.index.astype(str))["gold"]
    assert agree.mean() > 0.5  # it misses some words (as neutral), like each member


class FailingScriptLLM(FakeOpenAI):
    """Labels like FakeOpenAI; asked for the annotate script of the model only a script can
    run, writes one that passes the static check and fails in the sandbox, every attempt."""

    def answer(self, prompt: str) -> str:
        if ANNOTATE_REQUEST in prompt:
            return "```python\nimport sys\n\nsys.exit('no idea how this model works')\n```"
        return super().answer(prompt)


def test_a_model_no_script_passes_for_is_dropped_and_the_others_label_every_row(tmp_path):
    hub, data, store = keyword_run(tmp_path)
    with FailingScriptLLM(LABELS, WORDS) as llm:
        run_graph(store, fake_llm_options(llm, hub), resume=False)

    assert {m.id for m in store.committee()} == {"tiny/sentiment-0", "tiny/sentiment-1"}
    (dropped,) = read_json(store.models_path)["dropped"]
    assert dropped["id"] == "tiny/encoder-head"
    assert "annotate for tiny/encoder-head" in dropped["reason"]
    labels = pd.read_parquet(store.labels_path)
    assert len(labels) == len(pd.read_csv(data, keep_default_na=False))
    chunk = pd.read_parquet(store.chunk_votes(0))
    assert not any(c.startswith("tiny__encoder-head") for c in chunk.columns)
