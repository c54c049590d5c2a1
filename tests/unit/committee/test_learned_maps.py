"""Label maps learned from the user's rows: a hub whose models say negative/positive or
LABEL_0..2 for a task that says bearish/bullish, no --label-map, and a teacher (gold rows or a
scripted reviewer) labeling a sample; tiny keyword BERTs make each model's behaviour certain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from typer.testing import CliRunner

from agent.cli.app import app
from agent.committee.labels import Alignment, learn_map, llm_proposer
from agent.committee.selection import Policy, SelectionError, choose, rank_candidates, select
from agent.hub.local import LocalHub
from agent.llm.client import AnswerCache, LLMClient
from agent.pipeline.review import LLMReviewer, teacher_of
from agent.task import TaskSpec
from tests.fixtures.models import make_keyword_classifier
from tests.fixtures.reviewers import KeywordLabeler
from tests.unit.committee.test_selection import NEGATIVE_WORDS, POSITIVE_WORDS, sample_texts

MARKET = ["bearish", "bullish", "neutral"]
SENTIMENT = ["negative", "neutral", "positive"]
GENERIC = ["LABEL_0", "LABEL_1", "LABEL_2"]
DESCRIPTION = "sentiment of financial news tweets: bearish, bullish or neutral for the market"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def truth(text: str) -> str:
    """What sample_texts() means: its positive texts are bullish, its negative ones bearish."""
    words = set(text.split())
    if words & set(POSITIVE_WORDS):
        return "bullish"
    if words & set(NEGATIVE_WORDS):
        return "bearish"
    return "neutral"


@pytest.fixture(scope="module")
def market_hub(tmp_path_factory) -> Path:
    """Four models, none with the task's bearish/bullish: a right one (negative/positive), one
    whose negative and positive are swapped, one with LABEL_0..2 and no card saying what they
    mean, and one keyed on the texts' subjects (no relation to their sentiment)."""
    root = tmp_path_factory.mktemp("market-hub")
    sentiment = {"negative": NEGATIVE_WORDS, "positive": POSITIVE_WORDS}
    swapped = {"negative": POSITIVE_WORDS, "positive": NEGATIVE_WORDS}
    generic = {"LABEL_0": NEGATIVE_WORDS, "LABEL_2": POSITIVE_WORDS}
    subjects = {"LABEL_0": ["movie", "food"], "LABEL_2": ["phone", "team"]}
    for name, labels, keywords, default, downloads in (
        ("right", SENTIMENT, sentiment, "neutral", 4000),
        ("swapped", SENTIMENT, swapped, "neutral", 3000),
        ("generic", GENERIC, generic, "LABEL_1", 2000),
        ("subjects", GENERIC, subjects, "LABEL_1", 1_000_000),
    ):
        make_keyword_classifier(
            root / f"acme__tweet-{name}",
            labels,
            keywords,
            default,
            front_matter={"downloads": downloads, "base_model": f"tiny/{name}", "datasets": [name]},
        )
    return root


def market_task(k: int) -> TaskSpec:
    return TaskSpec(description=DESCRIPTION, labels=MARKET, k=k, data_path="data.csv")


class ScriptedReviewer:
    """Answers what each text means, and counts what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def __call__(self, rows: list[tuple[str, str]]) -> list[str | None]:
        self.asked += rows
        return [truth(text) for _, text in rows]


def test_maps_are_learned_from_the_reviewers_answers_and_a_chance_map_is_rejected(market_hub):
    reviewer = ScriptedReviewer()
    selection = choose(LocalHub(market_hub), market_task(k=3), sample_texts(), teacher=reviewer)
    chosen = {c.model.id: c for c in selection.chosen}
    assert set(chosen) == {"acme/tweet-right", "acme/tweet-swapped", "acme/tweet-generic"}
    # The reviewer labeled the first Policy.learn_rows sample rows once, for every model.
    assert len(reviewer.asked) == Policy.learn_rows == selection.teacher_rows

    right = chosen["acme/tweet-right"].to_json()
    assert right["label_map"] == {
        "negative": "bearish",
        "neutral": "neutral",
        "positive": "bullish",
    }
    assert right["label_evidence"]["negative"].startswith("learned on 40 rows: negative = bearish")
    assert right["label_evidence"]["neutral"].endswith("the prior agrees")  # its exact match
    learned = right["learned_map"]
    assert learned["teacher"] == "the reviewer" and learned["rows"] == 40
    assert learned["agreement"] == 1.0 and learned["chance"] < 0.4 and learned["kappa"] == 1.0
    assert learned["p_value"] == round(1 / 201, 3)  # no shuffle of the answers does as well
    assert sum(sum(row.values()) for row in learned["matrix"].values()) == 40
    assert learned["matrix"]["negative"] == {"bearish": 13}  # rows 1, 4, ... 37 of 0..39

    # Swapped labels cannot hide: the map the rows support undoes the swap.
    swapped = chosen["acme/tweet-swapped"].to_json()
    assert swapped["label_map"] == {
        "negative": "bullish",
        "neutral": "neutral",
        "positive": "bearish",
    }
    assert chosen["acme/tweet-generic"].to_json()["label_map"] == {
        "LABEL_0": "bearish",
        "LABEL_1": "neutral",
        "LABEL_2": "bullish",
    }
    # The most popular model, keyed on the texts' subjects, agrees only as chance would.
    subjects = next(c for c in selection.ranked if c.model.id == "acme/tweet-subjects")
    assert subjects.rejected.startswith("learned map: agreement with the reviewer ")
    assert subjects.learned.kappa < Policy.min_kappa
    assert subjects.learned.p_value > Policy.max_p
    assert subjects.learned.agreement - subjects.learned.chance < 0.15


def test_gold_rows_teach_before_the_reviewer(market_hub):
    texts = sample_texts()
    gold = [truth(text) if i % 2 == 0 else None for i, text in enumerate(texts)]  # 25 of 50
    reviewer = ScriptedReviewer()
    chosen, _ = select(LocalHub(market_hub), market_task(k=2), texts, gold=gold, teacher=reviewer)
    # 25 sample rows have gold; the reviewer is asked only for the 15 more learn_rows wants.
    assert len(reviewer.asked) == Policy.learn_rows - 25
    learned = chosen[0].to_json()["learned_map"]
    assert learned["teacher"] == "the gold labels and the reviewer"
    assert learned["rows"] == Policy.learn_rows


def test_without_a_teacher_other_label_names_are_still_rejected(market_hub):
    with pytest.raises(SelectionError) as err:
        select(LocalHub(market_hub), market_task(k=1), sample_texts())
    assert "cannot predict bearish, bullish" in err.value.summary


def test_an_llm_proposal_asks_nothing_for_a_model_whose_map_is_learned(market_hub):
    asked = []

    def propose(model_labels, task_labels, card):
        asked.append(model_labels)
        return {}

    select(
        LocalHub(market_hub),
        market_task(k=2),
        sample_texts(),
        propose=propose,
        teacher=ScriptedReviewer(),
    )
    assert asked == []


def test_the_reviewer_teaches_through_the_runs_llm_cache(market_hub, tmp_path):
    """The sample rows the reviewer labels at selection cost nothing when asked again (the
    audit asks for rows the same way)."""
    words = {w: "negative" for w in NEGATIVE_WORDS} | {w: "positive" for w in POSITIVE_WORDS}
    client = LLMClient(
        KeywordLabeler(keywords=words, fallback="neutral"),
        model="fake",
        cache_path=tmp_path / "llm_cache.sqlite",
        ledger_path=tmp_path / "ledger.jsonl",
    )
    reviewer = LLMReviewer(
        client,
        MARKET,
        DESCRIPTION,
        label_words={"bearish": "negative", "bullish": "positive"},
    )
    chosen, _ = select(
        LocalHub(market_hub), market_task(k=2), sample_texts(), teacher=teacher_of(reviewer)
    )
    assert chosen[0].to_json()["label_map"]["negative"] == "bearish"
    assert client.usage.calls == Policy.learn_rows and client.usage.cache_hits == 0
    select(LocalHub(market_hub), market_task(k=2), sample_texts(), teacher=teacher_of(reviewer))
    assert client.usage.calls == Policy.learn_rows
    assert client.usage.cache_hits == Policy.learn_rows


def test_a_model_with_more_labels_than_the_task_merges_the_leftovers_by_agreement():
    prior = Alignment({s: None for s in ("1 star", "2 stars", "3 stars", "5 stars")}, {})
    predicted = ["1 star", "2 stars", "2 stars", "3 stars", "5 stars", "5 stars"]
    taught = ["bearish", "bearish", "bearish", "neutral", "bullish", None]
    learned = learn_map(prior, MARKET, predicted, taught, "the reviewer")
    assert learned.alignment.mapping == {
        "1 star": "bearish",
        "2 stars": "bearish",
        "3 stars": "neutral",
        "5 stars": "bullish",
    }
    assert learned.rows == 5 and learned.agreement == 1.0
    assert "many-to-one: 1 star, 2 stars -> bearish" in learned.alignment.evidence["1 star"]


def test_llm_proposals_only_for_models_that_could_make_the_top_k(tmp_path):
    sentiment = {"negative": NEGATIVE_WORDS, "positive": POSITIVE_WORDS}
    generic = {"LABEL_0": NEGATIVE_WORDS, "LABEL_2": POSITIVE_WORDS}
    make_keyword_classifier(tmp_path / "a__named", SENTIMENT, sentiment, "neutral",
                            front_matter={"downloads": 4000})  # fmt: skip
    make_keyword_classifier(tmp_path / "b__generic", GENERIC, generic, "LABEL_1",
                            front_matter={"downloads": 2000})  # fmt: skip
    # Two labels can never cover three, whatever an LLM says they mean.
    make_keyword_classifier(tmp_path / "c__binary", ["yes", "no"], {"yes": POSITIVE_WORDS}, "no",
                            front_matter={"downloads": 9_000_000})  # fmt: skip
    asked = []

    def propose(model_labels, task_labels, card):
        asked.append(model_labels)
        return dict(zip(model_labels, task_labels, strict=True))

    spec = TaskSpec(description="sentiment of tweets", labels=SENTIMENT, k=1, data_path="d.csv")
    # Same card, fewer downloads: even mapped by a proposal, b scores under a.
    ranked = rank_candidates(LocalHub(tmp_path), spec, propose=propose)
    assert asked == [] and [c.rejected is None for c in ranked] == [True, False, False]
    ranked = rank_candidates(LocalHub(tmp_path), spec.model_copy(update={"k": 2}), propose=propose)
    assert asked == [GENERIC] and [c.rejected is None for c in ranked] == [True, True, False]


def test_label_map_proposals_are_kept_between_runs(tmp_path):
    shared = AnswerCache(tmp_path / "label-maps.sqlite")
    answer = '{"LABEL_0": "negative", "LABEL_1": "neutral", "LABEL_2": "positive"}'
    usage = []
    for run in ("run1", "run2"):
        client = LLMClient(
            FakeListChatModel(responses=[answer]),
            model="fake",
            cache_path=tmp_path / run / "llm_cache.sqlite",
            ledger_path=tmp_path / run / "ledger.jsonl",
        )
        propose = llm_proposer(client, "sentiment of tweets", shared)
        assert propose(GENERIC, SENTIMENT, "A card.") == json.loads(answer)
        usage.append((client.usage.calls, client.usage.cache_hits))
    assert usage == [(1, 0), (0, 1)]  # the second run's own cache is empty


def test_a_best_map_found_in_noise_is_not_above_chance():
    """Kappa alone is not enough: the best of six maps between labels drawn independently
    reaches kappa 0.2 on 20 rows here; the shuffled answers show that is what chance does."""
    rng = np.random.default_rng(3)
    taught, predicted = list(rng.choice(MARKET, 20)), list(rng.choice(GENERIC, 20))
    prior = Alignment({label: None for label in GENERIC}, {})
    learned = learn_map(prior, MARKET, predicted, taught, "the reviewer")
    assert learned.kappa >= Policy.min_kappa and learned.p_value > 0.3


def test_models_search_learns_maps_from_the_gold_column(market_hub, tmp_path):
    texts = sample_texts()
    data = tmp_path / "tweets.csv"
    pd.DataFrame({"text": texts, "label": [truth(t) for t in texts]}).to_csv(data, index=False)
    args = ["models", "search", DESCRIPTION, "--labels", ",".join(MARKET), "--k", "2"]
    args += ["--hub", str(market_hub), "--data", str(data), "--gold-column", "label", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["teacher_rows"] == 50  # every sample row has gold: all are used, none asked
    chosen = [c for c in report["candidates"] if c["chosen"]]
    assert len(chosen) == 2
    assert all(c["learned_map"]["teacher"] == "the gold labels" for c in chosen)
