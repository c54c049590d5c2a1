"""Model selection: ranking on real config formats, rejections with reasons, diversity, and the
smoke test on tiny BERTs whose behaviour is set by hand (so each failure mode is certain)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from agent.committee import selection as selection_module
from agent.committee.labels import align
from agent.committee.selection import (
    Policy,
    SelectionError,
    choose,
    expected_escalation,
    rank_candidates,
    select,
    static_rejection,
)
from agent.domain import CommitteeMember, Routing
from agent.hub.local import LocalHub
from agent.hub.protocol import ModelInfo
from agent.task import TaskSpec, parse_label_map
from tests.fixtures.models import card_text, make_keyword_classifier

FIXTURES = Path(__file__).parents[2] / "fixtures" / "model_configs"
SENTIMENT = ["negative", "neutral", "positive"]
TOXICITY = ["non-toxic", "toxic"]
POSITIVE_WORDS = [
    "good",
    "great",
    "best",
    "love",
    "happy",
    "nice",
    "wonderful",
    "awesome",
    "amazing",
    "perfect",
    "glad",
]
NEGATIVE_WORDS = [
    "bad",
    "worst",
    "hate",
    "sad",
    "awful",
    "terrible",
    "horrible",
    "poor",
    "angry",
    "boring",
    "ugly",
]
SUBJECTS = ["the movie", "my day", "this phone", "the food", "the team", "the show", "our city"]


def task(description: str, labels: list[str], k: int) -> TaskSpec:
    return TaskSpec(description=description, labels=labels, k=k, data_path="data.csv")


def sample_texts() -> list[str]:
    """50 short texts: a third positive, a third negative, a third plain statements."""
    texts = []
    for i in range(50):
        subject = SUBJECTS[i % len(SUBJECTS)]
        if i % 3 == 0:
            texts.append(f"{subject} was {POSITIVE_WORDS[i % len(POSITIVE_WORDS)]} today")
        elif i % 3 == 1:
            texts.append(f"{subject} was {NEGATIVE_WORDS[i % len(NEGATIVE_WORDS)]} today")
        else:
            texts.append(f"{subject} is at {i} pm on the news")
    return texts


def sentiment_model(path: Path, **kwargs) -> Path:
    keywords = {"positive": POSITIVE_WORDS, "negative": NEGATIVE_WORDS}
    return make_keyword_classifier(path, SENTIMENT, keywords, "neutral", **kwargs)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Tiny models gain nothing from threads, and on a shared 2-core machine extra threads only
    # contend (measured: 10x slower with the default thread count under load).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMOKE_ROLES = ["always-neutral", "never-neutral", "swapped", "multi-label", "broken", "a", "b"]
B_MISSES = ("awful", "terrible")
# Look-alike ids, so that popularity, not the words in an id, decides the smoke-test order.
ID = {role: f"acme/tweet-sentiment-{n}" for n, role in enumerate(SMOKE_ROLES, 1)}


@pytest.fixture(scope="module")
def smoke_hub(tmp_path_factory) -> Path:
    """A hub where only models a and b can do tweet sentiment; the others fail one smoke check
    each and are more popular, so they rank first and are smoke-tested first."""
    root = tmp_path_factory.mktemp("smoke-hub")

    def at(role: str) -> Path:
        return root / ID[role].replace("/", "__")

    popular = {"downloads": 5_000_000}
    sentiment_model(at("always-neutral"), bias={"neutral": 50.0}, front_matter=popular)
    sentiment_model(at("never-neutral"), bias={"neutral": -50.0}, front_matter=popular)
    make_keyword_classifier(
        at("swapped"),
        SENTIMENT,
        {"positive": NEGATIVE_WORDS, "negative": POSITIVE_WORDS},
        "neutral",
        front_matter=popular,
    )
    sentiment_model(
        at("multi-label"), problem_type="multi_label_classification", front_matter=popular
    )
    sentiment_model(at("broken"), front_matter=popular)
    (at("broken") / "model.safetensors").write_bytes(b"not a safetensors file")
    sentiment_model(
        at("a"), front_matter={"downloads": 10, "base_model": "tiny/bert", "datasets": ["a"]}
    )
    # b does not know B_MISSES, so the committee disagrees on some rows.
    make_keyword_classifier(
        at("b"),
        SENTIMENT,
        {"positive": POSITIVE_WORDS, "negative": [w for w in NEGATIVE_WORDS if w not in B_MISSES]},
        "neutral",
        front_matter={"downloads": 10, "base_model": "tiny/bert", "datasets": ["b"]},
    )
    return root


def by_id(candidates) -> dict:
    return {c.model.id: c for c in candidates}


def test_sentiment_ranking_on_real_config_formats():
    chosen, ranked = select(LocalHub(FIXTURES), task("sentiment of tweets", SENTIMENT, k=3))
    assert {c.model.id for c in chosen} == {
        "cardiffnlp/twitter-roberta-base-sentiment-latest",
        "cardiffnlp/twitter-roberta-base-sentiment",
        "finiteautomata/bertweet-base-sentiment-analysis",
    }
    candidates = by_id(ranked)
    stars = candidates["nlptown/bert-base-multilingual-uncased-sentiment"]
    assert stars.rejected is None and stars.note.startswith("not needed")
    assert stars.alignment.many_to_one["positive"] == ["4 stars", "5 stars"]
    generic = candidates["cardiffnlp/twitter-roberta-base-sentiment"]
    assert generic.alignment.mapping["LABEL_2"] == "positive"
    for toxicity_model in ("unitary/toxic-bert", "s-nlp/roberta_toxicity_classifier"):
        assert candidates[toxicity_model].rejected.startswith("cannot predict")
    # The score is eq. 1's similarity plus the label-fit and popularity parts, in that order
    # of weight; ranked lists acceptable models first, best score first.
    assert [c.chosen for c in ranked[:3]] == [True, True, True]
    scores = [c.score for c in ranked if c.rejected is None]
    assert scores == sorted(scores, reverse=True)
    assert set(chosen[0].score_parts) == {"similarity", "label_fit", "popularity"}


def test_multilabel_toxic_bert_is_rejected_for_binary_toxicity():
    chosen, ranked = select(LocalHub(FIXTURES), task("toxic comments", TOXICITY, k=1))
    assert [c.model.id for c in chosen] == ["s-nlp/roberta_toxicity_classifier"]
    assert chosen[0].alignment.mapping == {"neutral": "non-toxic", "toxic": "toxic"}
    toxic_bert = by_id(ranked)["unitary/toxic-bert"]
    assert "cannot predict non-toxic" in toxic_bert.rejected
    assert "severe_toxic" in toxic_bert.rejected


def test_too_few_fitting_models_raise_with_the_fix_and_every_reason():
    with pytest.raises(SelectionError) as err:
        select(LocalHub(FIXTURES), task("toxic comments", TOXICITY, k=2))
    summary, details = str(err.value).split("\n")
    assert summary.startswith(
        "only 1 of the k=2 models needed on hub 'local' can do non-toxic, toxic; closest: "
        "unitary/toxic-bert (cannot predict non-toxic; its severe_toxic, obscene, threat, "
        "identity_hate map to none), "
    )
    assert summary.endswith("; fix: --k 1") and err.value.fix == {"k": "1"}
    assert details.startswith("every candidate: ")
    assert "unitary/toxic-bert: cannot predict non-toxic" in details


def test_licence_allowlist_and_size_budget():
    policy = Policy(licenses=frozenset({"mit"}))
    ranked = rank_candidates(
        LocalHub(FIXTURES), task("sentiment of tweets", SENTIMENT, k=1), policy=policy
    )
    accepted = [c.model.id for c in ranked if c.rejected is None]
    assert accepted == ["nlptown/bert-base-multilingual-uncased-sentiment"]
    assert by_id(ranked)["cardiffnlp/twitter-roberta-base-sentiment"].rejected == (
        "licence unknown not in the allowlist"
    )

    big = ModelInfo("org/big", "org/big", SENTIMENT, "", size_bytes=5_000_000_000)
    alignment = align(big.labels, SENTIMENT)
    spec = task("sentiment", SENTIMENT, k=1)
    assert static_rejection(big, alignment, spec, Policy()) == (
        "weights 5000 MB over the 2147 MB budget"
    )
    assert static_rejection(big, alignment, spec, Policy(max_size_bytes=None)) is None


def write_config_only(root: Path, model_id: str, source: str, **front_matter) -> None:
    """A hub entry copied from a fixture, with its own id and card metadata."""
    target = root / model_id.replace("/", "__")
    target.mkdir(parents=True)
    shutil.copy(FIXTURES / source / "config.json", target)
    body = (FIXTURES / source / "README.md").read_text(encoding="utf-8").split("---\n", 2)[2]
    (target / "README.md").write_text(card_text(front_matter, body), encoding="utf-8")


def test_diversity_prefers_a_different_base_or_dataset(tmp_path):
    source = "cardiffnlp__twitter-roberta-base-sentiment-latest"
    lineage = {"base_model": "roberta-base", "datasets": ["tweet_eval"]}
    write_config_only(tmp_path, "a/tweets", source, downloads=3000, **lineage)
    write_config_only(tmp_path, "b/tweets-copy", source, downloads=2000, **lineage)
    write_config_only(
        tmp_path,
        "c/reviews",
        "nlptown__bert-base-multilingual-uncased-sentiment",
        downloads=10,
        base_model="bert-base-multilingual-uncased",
        datasets=["amazon_reviews"],
    )
    hub = LocalHub(tmp_path)

    twins = {"a/tweets", "b/tweets-copy"}
    chosen, ranked = select(hub, task("sentiment of tweets", SENTIMENT, k=2))
    first, second = (c.model.id for c in chosen)
    assert first in twins and second == "c/reviews"  # despite its lower score
    (other,) = twins - {first}
    copy = by_id(ranked)[other]
    assert copy.rejected is None and not copy.chosen
    assert copy.note == f"same base model and training data as {first}"
    assert copy.score > by_id(ranked)["c/reviews"].score

    chosen, _ = select(hub, task("sentiment of tweets", SENTIMENT, k=3))
    assert [c.model.id for c in chosen] == [first, "c/reviews", other]
    assert chosen[2].note == f"same base model and data as {first}; no alternative"


def test_smoke_test_rejects_each_failure_with_its_reason(smoke_hub):
    texts = [None, "", *sample_texts()]  # blanks in the user's column are skipped
    selection = choose(LocalHub(smoke_hub), task("sentiment of tweets", SENTIMENT, k=2), texts)
    assert [c.model.id for c in selection.chosen] == [ID["a"], ID["b"]]
    assert selection.sample_rows == 50
    reasons = {c.model.id: c.rejected for c in selection.ranked if c.rejected}
    # Degenerate: far from what the next two candidates, run early for it, answer together.
    assert reasons[ID["always-neutral"]] == (
        "smoke test: its labels on 50 sample texts (neutral 100%) are far from the other "
        f"candidates' pooled votes ({ID['never-neutral']}, {ID['swapped']}) on the same texts "
        "(negative 50%, neutral 16%, positive 34%): total variation 0.84 > 0.5"
    )
    assert reasons[ID["never-neutral"]].startswith("smoke test: never answers neutral")
    assert reasons[ID["swapped"]] == (
        "smoke test: 3/9 obvious probes right (negative probes came out as positive (3/3); "
        "positive probes came out as negative (3/3))"
    )
    assert reasons[ID["multi-label"]].startswith("multi-label model")
    assert reasons[ID["broken"]].startswith("smoke test crashed (")
    assert len(reasons) == 5


def test_smoke_answers_are_kept_between_runs_until_the_model_changes(
    smoke_hub, tmp_path, monkeypatch
):
    """A second selection on the same rows loads no candidate; a changed model is run again."""
    hub_copy = tmp_path / "hub"
    shutil.copytree(smoke_hub, hub_copy)
    loaded = []
    forward = selection_module._forward
    monkeypatch.setattr(
        selection_module,
        "_forward",
        lambda source, *a: loaded.append(source) or forward(source, *a),
    )
    spec, texts = task("sentiment of tweets", SENTIMENT, k=2), sample_texts()
    policy = Policy(smoke_cache=tmp_path / "smoke")
    first = choose(LocalHub(hub_copy), spec, texts, policy=policy)
    assert loaded  # every smoke-tested candidate ran once
    ran = len(loaded)
    again = choose(LocalHub(hub_copy), spec, texts, policy=policy)
    # The second selection ran no model but the one that crashed (a crash is not an answer).
    broken = str(hub_copy / ID["broken"].replace("/", "__"))
    assert loaded[ran:] == [broken]
    ran = len(loaded)
    assert [c.rejected for c in again.ranked] == [c.rejected for c in first.ranked]
    assert [c.model.id for c in again.chosen] == [c.model.id for c in first.chosen]
    # Other texts, or the same model with other files, are new questions.
    choose(LocalHub(hub_copy), spec, texts[:-1], policy=policy)
    assert len(loaded) > ran
    ran = len(loaded)
    chosen_dir = hub_copy / first.chosen[0].model.id.replace("/", "__")
    (chosen_dir / "extra.txt").write_text("changed")
    choose(LocalHub(hub_copy), spec, texts[:-1], policy=policy)
    assert sorted(loaded[ran:]) == sorted([str(chosen_dir), broken])


def skewed_sample() -> tuple[list[str], list[str]]:
    """50 texts, 70% neutral, 26% negative: (texts, gold); b does not know the negative words."""
    texts, gold = [], []
    for i in range(50):
        subject = SUBJECTS[i % len(SUBJECTS)]
        if i % 10 < 7:
            texts.append(f"{subject} is at {i} pm on the news")
            gold.append("neutral")
        elif i < 48:
            texts.append(f"{subject} was {B_MISSES[i % 2]} today")
            gold.append("negative")
        else:
            texts.append(f"{subject} was {POSITIVE_WORDS[i % len(POSITIVE_WORDS)]} today")
            gold.append("positive")
    return texts, gold


@pytest.mark.parametrize("with_gold", [True, False])
def test_a_model_right_about_a_skewed_sample_is_kept(smoke_hub, with_gold):
    texts, gold = skewed_sample()
    assert gold.count("neutral") == 35 and gold.count("negative") == 13
    spec = task("sentiment of tweets", SENTIMENT, k=2)
    selection = choose(LocalHub(smoke_hub), spec, texts, gold=gold if with_gold else None)
    assert [c.model.id for c in selection.chosen] == [ID["a"], ID["b"]]
    a, b = selection.chosen
    # a is right: neutral for 70% of the rows, as the gold labels say.
    assert a.smoke.label_share["neutral"] == pytest.approx(0.7)
    # b misses every negative word here and answers neutral for 96% of the rows, which a fixed
    # share of one label (95%) called degenerate; 0.26 from the reference is not far.
    assert b.smoke.label_share["neutral"] == pytest.approx(0.96)
    assert b.smoke.distance == pytest.approx(0.26)
    reference = (
        "the gold labels" if with_gold else f"the other candidates' pooled votes ({ID['a']})"
    )
    assert b.smoke.reference == reference
    assert b.to_json()["smoke"]["reference"] == reference
    reasons = {c.model.id: c.rejected for c in selection.ranked if c.rejected}
    assert len(reasons) == 5
    if with_gold:
        # Never neutral where the gold labels are 70% neutral: far, and the reason says so.
        assert reasons[ID["never-neutral"]].startswith("smoke test: its labels on 50 sample texts")
        assert (
            "far from the gold labels on the same texts (negative 26%, neutral 70%, positive 4%)"
            in (reasons[ID["never-neutral"]])
        )


def test_models_search_compares_with_the_gold_column(smoke_hub, tmp_path):
    texts, gold = skewed_sample()
    data = tmp_path / "tweets.csv"
    pd.DataFrame({"text": texts, "label": gold}).to_csv(data, index=False)
    args = ["models", "search", "sentiment of tweets", "--labels", ",".join(SENTIMENT)]
    args += ["--hub", str(smoke_hub), "--k", "2", "--data", str(data), "--gold-column", "label"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["chosen"] == [ID["a"], ID["b"]]
    assert report["candidates"][1]["smoke"]["reference"] == "the gold labels"
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert "neutral 96%, positive 4%; 0.26 from gold" in result.output


def test_gold_on_too_few_sample_rows_leaves_the_reference_to_the_committee(smoke_hub):
    texts, gold = skewed_sample()
    few = [g if i < 9 else None for i, g in enumerate(gold)]  # 9 < Policy.min_reference_rows
    selection = choose(
        LocalHub(smoke_hub), task("sentiment of tweets", SENTIMENT, k=2), texts, gold=few
    )
    assert selection.chosen[1].smoke.reference.startswith("the other candidates' pooled votes")


def test_expected_escalation_is_the_share_of_sample_rows_the_committee_disagrees_on(smoke_hub):
    chosen, _ = select(
        LocalHub(smoke_hub), task("sentiment of tweets", SENTIMENT, k=2), sample_texts()
    )
    a, b = chosen
    disagree = sum(x != y for x, y in zip(a.smoke.predictions, b.smoke.predictions, strict=True))
    # Only the texts with a word b does not know split the committee: b reads them as neutral.
    unknown_to_b = sum(any(word in t.split() for word in B_MISSES) for t in sample_texts())
    assert disagree == unknown_to_b > 0
    assert a.expected_escalation == b.expected_escalation == disagree / 50
    assert a.smoke.probes.accuracy == 1.0

    saved = json.loads(json.dumps(a.to_json()))
    assert {"id", "slug", "source", "labels", "similarity", "label_map", "label_evidence"} <= set(
        saved
    )
    assert {"rejected", "license", "size_bytes", "base_model", "datasets"} <= set(saved)
    assert saved["expected_escalation"] == round(disagree / 50, 4)
    assert saved["smoke"]["rows"] == 50 and saved["chosen"] is True
    member = CommitteeMember.from_dict(saved)  # what the pipeline reads models.json into
    assert member.expected_escalation == saved["expected_escalation"]
    assert member.to_dict() == saved

    # Routing by margin asks about its share of those rows: the run expects that many.
    margin = task("sentiment of tweets", SENTIMENT, k=2).model_copy(
        update={"routing": Routing.MARGIN, "margin_share": 0.6}
    )
    assert expected_escalation(chosen, margin) == pytest.approx(0.6 * disagree / 50)


def test_models_search_cli_shows_choices_rejections_and_escalation(smoke_hub, tmp_path):
    data = tmp_path / "tweets.csv"
    data.write_text("body\n" + "\n".join(sample_texts()) + "\n", encoding="utf-8")
    runner = CliRunner()

    def search(k: int, *extra: str):
        args = ["models", "search", "sentiment of tweets", "--labels", ",".join(SENTIMENT)]
        args += ["--hub", str(smoke_hub), "--k", str(k), "--data", str(data)]
        return runner.invoke(app, [*args, "--text-column", "body", *extra], env={"COLUMNS": "250"})

    result = search(2, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["chosen"] == [ID["a"], ID["b"]]
    assert report["sample_rows"] == 50 and 0 < report["expected_escalation"] < 0.5
    assert len([c for c in report["candidates"] if c["rejected"]]) == 5

    result = search(2)
    assert result.exit_code == 0, result.output
    assert ID["a"] in result.output and "chosen" in result.output
    status = " ".join(result.output.replace("│", " ").split())  # the table wraps the reasons
    assert "neutral 100%; 0.84 from the others" in status
    assert "its labels on 50 sample texts (neutral 100%) are far from the other" in status
    assert "expected escalation:" in result.output

    result = search(3)
    assert result.exit_code == 1
    line = " ".join(result.output.split())
    assert "error: only 2 of the k=3 models needed on hub 'local' can do negative" in line
    assert line.endswith("; fix: --k 2")


MARKET = ["bearish", "bullish", "neutral"]


def test_models_with_other_label_names_are_selected_only_through_the_label_map(smoke_hub):
    hub = LocalHub(smoke_hub)
    spec = task("market sentiment of tweets", MARKET, k=2)
    ranked = rank_candidates(hub, spec)
    assert all(c.rejected.startswith("cannot predict bearish, bullish") for c in ranked)

    user = spec.model_copy(update={"label_map": {"negative": "bearish", "positive": "bullish"}})
    chosen, ranked = select(hub, user, sample_texts())
    assert [c.model.id for c in chosen] == [ID["a"], ID["b"]]
    saved = chosen[0].to_json()
    assert saved["label_map"] == {
        "negative": "bearish",
        "neutral": "neutral",
        "positive": "bullish",
    }
    assert saved["label_evidence"] == {"negative": "user", "neutral": "exact", "positive": "user"}

    # The per-model form maps that model only.
    one = spec.model_copy(
        update={
            "k": 1,
            "model_label_maps": {ID["b"]: {"negative": "bearish", "positive": "bullish"}},
        }
    )
    chosen, ranked = select(hub, one, sample_texts())
    assert [c.model.id for c in chosen] == [ID["b"]]
    assert by_id(ranked)[ID["a"]].rejected.startswith("cannot predict bearish, bullish")


def test_models_search_takes_the_label_map(smoke_hub, tmp_path):
    data = tmp_path / "tweets.csv"
    data.write_text("text\n" + "\n".join(sample_texts()) + "\n", encoding="utf-8")
    args = ["models", "search", "market sentiment of tweets", "--labels", ",".join(MARKET)]
    args += ["--hub", str(smoke_hub), "--k", "2", "--data", str(data), "--json"]
    result = CliRunner().invoke(app, [*args, "--label-map", "negative=bearish,positive=bullish"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["chosen"] == [ID["a"], ID["b"]]


def test_label_words_feed_alignment_as_well_as_review(smoke_hub):
    words = {"bearish": "negative", "bullish": "positive"}
    spec = task("market sentiment of tweets", MARKET, k=2).model_copy(update={"label_words": words})
    chosen, _ = select(LocalHub(smoke_hub), spec, sample_texts())
    assert [c.model.id for c in chosen] == [ID["a"], ID["b"]]
    assert chosen[0].alignment.evidence["positive"] == "label word: bullish is shown as positive"


def test_a_hub_of_other_label_names_fails_with_the_label_map_that_fixes_it(smoke_hub):
    hub = LocalHub(smoke_hub)
    spec = task("market sentiment of tweets", MARKET, k=2)

    # What the embedded LLM answered in issue 16: a guess that leaves bearish out.
    def propose(model_labels, task_labels, card):
        return {"negative": "neutral", "positive": "bullish"}

    with pytest.raises(SelectionError) as err:
        select(hub, spec, sample_texts(), propose=propose)
    summary = err.value.summary
    assert summary.startswith(
        "only 0 of the k=2 models needed on hub 'local' can do bearish, bullish, neutral; "
        "closest: acme/tweet-sentiment-"
    )
    assert summary.count(" (cannot predict bearish)") == 3  # the LLM's bullish stands so far
    assert summary.endswith(
        "; fix: --label-map negative=bearish,positive=bullish (lets 7 more model(s) map onto "
        "bearish, bullish, neutral)"
    )
    assert err.value.fix == {"label_map": "negative=bearish,positive=bullish"}
    # And it does.
    fixed = spec.model_copy(update={"label_map": {"negative": "bearish", "positive": "bullish"}})
    chosen, _ = select(hub, fixed, sample_texts(), propose=propose)
    assert [c.model.id for c in chosen] == [ID["a"], ID["b"]]


def generic_hub(root: Path) -> LocalHub:
    """Two models whose labels are LABEL_0..2 and whose cards do not say what they mean."""
    source = "cardiffnlp__twitter-roberta-base-sentiment"
    for model_id, topic, downloads in (("a/tweets", "tweets", 10), ("b/poems", "poems", 5)):
        target = root / model_id.replace("/", "__")
        target.mkdir(parents=True)
        shutil.copy(FIXTURES / source / "config.json", target)
        body = f"# Sentiment classifier\n\nA sentiment analysis model fine-tuned on {topic}.\n"
        (target / "README.md").write_text(card_text({"downloads": downloads}, body))
    return LocalHub(root)


def test_generic_labels_without_a_card_fail_with_a_per_model_label_map(tmp_path):
    hub = generic_hub(tmp_path)
    spec = task("sentiment of tweets", SENTIMENT, k=1)
    with pytest.raises(SelectionError) as err:
        select(hub, spec)
    summary, details = str(err.value).split("\n")
    assert summary == (
        "only 0 of the k=1 models needed on hub 'local' can do negative, neutral, positive; "
        "closest: a/tweets (cannot predict negative, neutral, positive; its LABEL_0, LABEL_1, "
        "LABEL_2 map to none), b/poems (cannot predict negative, neutral, positive; its LABEL_0, "
        "LABEL_1, LABEL_2 map to none); fix: --label-map a/tweets:LABEL_0=negative,"
        "a/tweets:LABEL_1=neutral,a/tweets:LABEL_2=positive (lets 1 more model(s) map onto "
        "negative, neutral, positive, if their labels mean yours in this order: check their cards)"
    )
    assert details.startswith("every candidate: a/tweets: cannot predict negative, neutral")
    items = err.value.fix["label_map"].split(",")
    shared, per_model = parse_label_map(items)
    chosen, _ = select(hub, spec.model_copy(update={"model_label_maps": per_model}))
    assert [c.model.id for c in chosen] == ["a/tweets"] and not shared

    # Two needed: one map per model, each its own.
    with pytest.raises(SelectionError) as err:
        select(hub, spec.model_copy(update={"k": 2}))
    assert "b/poems:LABEL_2=positive (lets 2 more model(s)" in err.value.summary


def test_run_stops_on_a_failed_selection_with_one_line_and_the_details(tmp_path):
    hub = generic_hub(tmp_path / "hub")
    data = tmp_path / "tweets.csv"
    data.write_text("text\n" + "\n".join(sample_texts()) + "\n", encoding="utf-8")
    args = ["run", "--data", str(data), "--labels", ",".join(SENTIMENT), "--task", "sentiment"]
    args += ["--k", "1", "--reviewer", "none", "--codegen", "template", "--sandbox", "local"]
    args += ["--hub", str(hub.root), "--run-dir", str(tmp_path / "run"), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    first, second = result.output.rstrip("\n").split("\n")
    assert first.startswith("error: only 0 of the k=1 models needed on hub 'local'")
    assert "fix: --label-map a/tweets:LABEL_0=negative," in first
    assert first.endswith(f"then run again ({tmp_path / 'run'} holds no labels; remove it)")
    assert second.startswith("every candidate: a/tweets: cannot predict negative")


def test_an_llm_proposal_rescues_generic_labels_for_the_closest_models_only(tmp_path, monkeypatch):
    import agent.committee.selection

    source = "cardiffnlp__twitter-roberta-base-sentiment"
    for model_id, topic in (("a/tweet-sentiment", "tweets"), ("b/poems", "medieval poetry")):
        target = tmp_path / model_id.replace("/", "__")
        target.mkdir(parents=True)
        shutil.copy(FIXTURES / source / "config.json", target)
        # No "0 -> negative" line: rules alone cannot map LABEL_0..2.
        body = f"# Sentiment classifier\n\nA sentiment analysis model fine-tuned on {topic}.\n"
        (target / "README.md").write_text(card_text({"downloads": 10}, body), encoding="utf-8")
    asked = []

    def propose(model_labels, task_labels, card):
        asked.append(card)
        return {"LABEL_0": "negative", "LABEL_1": "neutral", "LABEL_2": "positive"}

    hub = LocalHub(tmp_path)
    spec = task("sentiment of tweets", SENTIMENT, k=1)
    assert all(c.rejected for c in rank_candidates(hub, spec))

    monkeypatch.setattr(agent.committee.selection, "MAX_PROPOSALS", 1)
    ranked = by_id(rank_candidates(hub, spec, propose=propose))
    assert len(asked) == 1 and "tweets" in asked[0]
    rescued = ranked["a/tweet-sentiment"]
    assert rescued.rejected is None
    assert rescued.alignment.evidence["LABEL_2"] == "proposed by the LLM: LABEL_2 = positive"
    assert ranked["b/poems"].rejected


def test_a_model_only_a_written_script_can_run_is_considered_but_not_smoke_tested(tmp_path):
    from tests.fixtures.models import make_keyword_embedding_model

    root = tmp_path / "hub"
    keywords = {"positive": POSITIVE_WORDS, "negative": NEGATIVE_WORDS}
    make_keyword_classifier(
        root / "tiny__plain", SENTIMENT, keywords, "neutral",
        front_matter={"downloads": 10, "base_model": "tiny/bert", "datasets": ["a"]},
    )  # fmt: skip
    make_keyword_embedding_model(
        root / "tiny__encoder-head", SENTIMENT, keywords, "neutral",
        front_matter={"downloads": 10, "base_model": "tiny/encoder", "datasets": ["b"]},
    )  # fmt: skip
    texts, gold = skewed_sample()
    chosen, _ = select(
        LocalHub(root), task("sentiment of tweets", SENTIMENT, k=2), texts, gold=gold
    )
    by = by_id(chosen)
    assert set(by) == {"tiny/plain", "tiny/encoder-head"}
    head = by["tiny/encoder-head"]
    assert head.smoke is None and head.note.startswith(
        "not smoke-tested: a model of kind embedding-head"
    )
    assert head.to_json()["kind"] == "embedding-head"
    assert by["tiny/plain"].smoke is not None and by["tiny/plain"].to_json()["kind"] == (
        "sequence-classification"
    )
