"""Retrieval few-shot: which labeled rows of the run a sample is shown with, and how they are
kept (agent/pipeline/shots.py), and how a batch call merges its samples' examples."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from agent.domain import CommitteeMember, Route, ShotLayout, Source
from agent.pipeline.hardpool import audit_chunk, review_chunk
from agent.pipeline.review import Example, ReviewItem, Verdict, batch_examples
from agent.pipeline.shots import (
    MAX_EXAMPLE_CHARS,
    ExampleSelector,
    RunEmbeddings,
    Tier,
    attach_examples,
    kept_examples,
    labeled_rows,
)
from agent.store.runstore import RunStore, read_json, write_json, write_parquet
from agent.task import TaskSpec

LABELS = ["positive", "negative", "neutral"]


def at(degrees: float) -> list[float]:
    """A unit vector at an angle: the cosine distance between two grows with their angle."""
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def selector(rows: list[tuple[str, str, int, float]], k: int) -> ExampleSelector:
    """Candidates (id, label, tier, angle); each one's text is its id."""
    candidates = pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "text": [r[0] for r in rows],
            "label": [r[1] for r in rows],
            "tier": [r[2] for r in rows],
        }
    )
    return ExampleSelector(candidates, np.array([at(r[3]) for r in rows]), k)


def chosen(select: ExampleSelector, degrees: float, own: str = "sample") -> list[str]:
    return [e.text for e in select.select(np.array([at(degrees)]), [own])[0]]


C = Tier.COMMITTEE


def test_the_nearest_rows_come_farthest_first_so_the_nearest_is_last():
    rows = [("p10", "positive", C, 10), ("p20", "positive", C, 20), ("p5", "positive", C, 5),
            ("p90", "positive", C, 90)]  # fmt: skip
    assert chosen(selector(rows, k=3), 0) == ["p20", "p10", "p5"]


def test_every_label_gets_an_example_however_far():
    rows = [(f"p{d}", "positive", C, d) for d in (1, 2, 3, 4, 5)]
    rows += [("neg", "negative", C, 170), ("neu", "neutral", C, 100)]
    examples = selector(rows, k=4).select(np.array([at(0)]), ["sample"])[0]
    assert [(e.text, e.label) for e in examples] == [
        ("neg", "negative"),
        ("neu", "neutral"),
        ("p2", "positive"),
        ("p1", "positive"),
    ]


def test_fewer_shots_than_labels_go_to_the_labels_with_the_nearest_examples():
    rows = [("p", "positive", C, 10), ("neg", "negative", C, 170), ("neu", "neutral", C, 60)]
    assert chosen(selector(rows, k=2), 0) == ["neu", "p"]


def test_gold_and_human_rows_come_before_nearer_committee_rows():
    rows = [
        ("committee-near", "positive", Tier.COMMITTEE, 1),
        ("committee-neg", "negative", Tier.COMMITTEE, 2),
        ("human-far", "positive", Tier.HUMAN, 80),
        ("gold-farther", "positive", Tier.GOLD, 85),
        ("committee-next", "positive", Tier.COMMITTEE, 3),
    ]
    # Each label's example from its best tier (gold for positive, the committee's for negative);
    # the other slots in tier order, gold and human before the committee's nearer rows.
    assert chosen(selector(rows, k=3), 0) == ["gold-farther", "human-far", "committee-neg"]
    assert chosen(selector(rows, k=4), 0) == [
        "gold-farther",
        "human-far",
        "committee-neg",
        "committee-near",
    ]


def test_a_sample_is_never_its_own_example():
    rows = [("sample", "positive", Tier.GOLD, 0), ("p30", "positive", C, 30),
            ("neg", "negative", C, 150)]  # fmt: skip
    assert chosen(selector(rows, k=2), 0, own="sample") == ["neg", "p30"]
    assert chosen(selector(rows, k=2), 0, own="other") == ["neg", "sample"]
    # With nothing else to show, a sample gets fewer examples rather than itself.
    assert chosen(selector([("sample", "positive", C, 0)], k=4), 0) == []


def test_many_queries_at_once_each_get_their_own_neighbours():
    rows = [("east", "positive", C, 0), ("north", "negative", C, 90), ("west", "neutral", C, 180)]
    select = selector(rows, k=1)
    found = select.select(np.array([at(5), at(95), at(175)]), ["a", "b", "c"])
    assert [[e.text for e in examples] for examples in found] == [["east"], ["north"], ["west"]]


class CountingEmbed:
    """A stand-in encoder: a text's vector from its letters; counts the texts it embeds."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += texts
        vectors = np.array(
            [[t.count(c) + 0.01 for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts],
            dtype=np.float32,
        )
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_each_text_is_embedded_once_and_kept_in_the_run(tmp_path):
    embed = CountingEmbed()
    path = tmp_path / "embeddings.npz"
    first = RunEmbeddings(path, embed).vectors(["1", "2"], ["apple", "banana"])
    assert embed.texts == ["apple", "banana"]
    # A later chunk, or a resumed run: only the new id is embedded, the rest read back.
    again = RunEmbeddings(path, embed).vectors(["2", "3", "1"], ["banana", "cherry", "apple"])
    assert embed.texts == ["apple", "banana", "cherry"]
    np.testing.assert_array_equal(again[[2, 0]], first)
    assert again.shape == (3, 26)
    assert RunEmbeddings(path, embed).vectors([], []).shape[0] == 0


def make_run(tmp_path, evidence: bool) -> RunStore:
    texts = ["I love it", "great stuff", "awful", "so bad", "meh", "the sky", "love love",
             "we lost", "fine day"]  # fmt: skip
    gold = ["positive", "positive", "negative", "negative", "neutral", "neutral", "positive",
            "negative", "neutral"]  # fmt: skip
    frame = pd.DataFrame({"text": texts, "gold": gold})
    if evidence:
        frame["evidence"] = [True, False, False, False, False, False, False, False, False]
    frame.to_csv(tmp_path / "data.csv", index=False)
    task = TaskSpec(
        description="sentiment",
        labels=LABELS,
        data_path=str(tmp_path / "data.csv"),
        gold_column="gold",
        chunk_size=3,
    )
    rows = pd.DataFrame({"row": range(len(texts)), "id": [str(i) for i in range(len(texts))],
                         "text": texts, "gold": frame["gold"]})  # fmt: skip
    if evidence:
        rows["evidence"] = frame["evidence"]
    store = RunStore.create(tmp_path / "run", task, rows)
    # Chunk 0 (rows 0-2) and chunk 1 (rows 3-5) voted; chunk 0 reviewed, a person answered 2.
    votes = pd.DataFrame(
        {
            "id": [str(i) for i in range(6)],
            "label": ["positive", "positive", "neutral", "negative", "neutral", "positive"],
            "uncertainty": [0.0, 0.0, 0.5, 0.0, 0.0, 1 / 3],
        }
    )
    write_parquet(votes.iloc[:3], store.chunk_votes(0))
    write_parquet(votes.iloc[3:], store.chunk_votes(1))
    write_parquet(
        pd.DataFrame({"id": ["2"], "label": ["negative"], "source": [Source.HUMAN]}),
        store.hard_chunk(0),
    )
    # A later chunk's answers and votes must not reach chunk 1's pool.
    write_parquet(
        pd.DataFrame({"id": ["5"], "label": ["neutral"], "source": [Source.HUMAN]}),
        store.hard_chunk(1),
    )
    write_parquet(
        pd.DataFrame({"id": ["6"], "label": ["positive"], "uncertainty": [0.0]}),
        store.chunk_votes(2),
    )
    return store


def test_the_pool_is_gold_evidence_human_answers_before_and_confident_votes_so_far(tmp_path):
    pool = labeled_rows(make_run(tmp_path, evidence=True), chunk=1)
    assert sorted(zip(pool["id"], pool["label"], pool["tier"], strict=True)) == [
        ("0", "positive", Tier.GOLD),  # also a unanimous vote: counted once, as gold
        ("1", "positive", Tier.COMMITTEE),
        ("2", "negative", Tier.HUMAN),  # the committee disagreed; a person answered
        ("3", "negative", Tier.COMMITTEE),
        ("4", "neutral", Tier.COMMITTEE),
    ]
    assert dict(zip(pool["id"], pool["text"], strict=True))["2"] == "awful"


def test_without_an_evidence_column_the_gold_labels_are_never_shown(tmp_path):
    pool = labeled_rows(make_run(tmp_path, evidence=False), chunk=1)
    assert Tier.GOLD not in set(pool["tier"])
    assert set(pool["id"]) == {"0", "1", "2", "3", "4"}


def test_attach_examples_gives_each_sample_its_neighbours_from_the_run(tmp_path):
    store = make_run(tmp_path, evidence=False)
    embed = CountingEmbed()
    items = [ReviewItem("5", "the sky", {}), ReviewItem("4", "meh", {})]
    attached = attach_examples(store, 1, items, k=3, embed=embed, layout=ShotLayout.NEAREST)
    assert [i.id for i in attached] == ["5", "4"]
    assert [len(item.examples) for item in attached] == [3, 3]
    assert {e.label for e in attached[0].examples} == set(LABELS)
    # Row 4 is the pool's only neutral row: it is not its own example.
    assert {e.label for e in attached[1].examples} == {"positive", "negative"}
    assert "meh" in {e.text for e in attached[0].examples}
    assert store.embeddings_path.is_file()
    # Asked again (a resumed chunk): the same examples, and nothing embedded twice.
    embedded = len(embed.texts)
    assert attach_examples(store, 1, items, k=3, embed=embed, layout=ShotLayout.NEAREST) == attached
    assert len(embed.texts) == embedded
    assert attach_examples(store, 1, items, k=0, embed=embed) == items


def test_the_fixed_layout_shows_every_sample_the_same_examples_none_of_them_a_sample(tmp_path):
    store = make_run(tmp_path, evidence=False)
    embed = CountingEmbed()
    items = [ReviewItem("5", "the sky", {}), ReviewItem("4", "meh", {})]
    attached = attach_examples(store, 1, items, k=3, embed=embed)  # fixed by default
    assert attached[0].examples == attached[1].examples
    assert len(attached[0].examples) == 3
    # Row 4 (the pool's only neutral row) is a sample here, so no one is shown it.
    assert {e.label for e in attached[0].examples} == {"positive", "negative"}
    assert "meh" not in {e.text for e in attached[0].examples}
    # Only the pool is embedded: the samples' own vectors play no part in this layout.
    assert "the sky" not in embed.texts
    assert attach_examples(store, 1, items, k=3, embed=embed) == attached


def test_typical_examples_are_each_labels_rows_nearest_its_centre_the_labels_taking_turns():
    rows = [("p0", "positive", C, 0), ("p20", "positive", C, 20), ("p30", "positive", C, 30),
            ("n150", "negative", C, 150), ("n170", "negative", C, 170),
            ("n175", "negative", C, 175), ("u", "neutral", C, 90)]  # fmt: skip
    # Centres near 17 and 165 degrees: each label's rows in that order, the labels taking turns
    # (in the order their rows come) so each is shown before any is shown twice.
    assert [e.text for e in selector(rows, k=5).typical()] == ["p20", "n170", "u", "p30", "n175"]
    assert [e.text for e in selector(rows, k=2).typical(exclude=["p20"])] == ["p30", "n170"]


def test_a_chunk_keeps_the_examples_before_it_until_better_ones_arrive(tmp_path):
    store = make_run(tmp_path, evidence=False)  # only for where the choices are kept
    G = Tier.GOLD
    first = [("p0", "positive", C, 0), ("p30", "positive", C, 30), ("p40", "positive", C, 40),
             ("n150", "negative", C, 150), ("n170", "negative", C, 170),
             ("n175", "negative", C, 175)]  # fmt: skip
    shown = [e.text for e in kept_examples(store, 0, selector(first, k=2), [])]
    assert shown == ["p30", "n170"]  # the most typical: nothing was shown before
    # Chunk 1's pool moves the positive centre to p12, but the same labels and tiers are shown
    # as before, so chunk 0's examples stay and the server keeps the prompt's start.
    grown = [*first, ("p10", "positive", C, 10), ("p12", "positive", C, 12)]
    assert [e.text for e in selector(grown, k=2).typical()] == ["p12", "n170"]
    assert [e.text for e in kept_examples(store, 1, selector(grown, k=2), [])] == shown
    # Asked again, by the audit or a resumed chunk: chunk 1's own choice.
    assert [e.text for e in kept_examples(store, 1, selector(grown, k=2), [])] == shown
    # One of them is a sample being asked about: it is not shown, the chunk's typical rows are.
    assert [e.text for e in kept_examples(store, 1, selector(grown, k=2), ["p30"])] == [
        "p12",
        "n170",
    ]
    # A gold negative arrives: a better tier than the committee's, so it replaces n170.
    gold = [*grown, ("g160", "negative", G, 160)]
    assert [e.text for e in kept_examples(store, 2, selector(gold, k=2), [])] == ["p12", "g160"]
    # A row shown before that is no longer a candidate is not shown again.
    gone = [row for row in grown if row[0] != "p30"]
    assert [e.text for e in kept_examples(store, 3, selector(gone, k=2), [])] == ["p12", "n170"]


def test_a_text_longer_than_the_limit_is_never_an_example():
    long_text = "x" * (MAX_EXAMPLE_CHARS + 1)
    candidates = pd.DataFrame(
        {
            "id": ["long", "p20", "n170"],
            "text": [long_text, "p20", "n170"],
            "label": ["positive", "positive", "negative"],
            "tier": [Tier.GOLD, C, C],
        }
    )
    vectors = np.array([at(0), at(20), at(170)])
    select = ExampleSelector(candidates, vectors, k=3)
    # The long gold row is the nearest and the best tier, yet neither layout shows it.
    assert [e.text for e in select.select(np.array([at(0)]), ["sample"])[0]] == ["n170", "p20"]
    assert [e.text for e in select.typical()] == ["p20", "n170"]
    at_the_limit = candidates.assign(text=["x" * MAX_EXAMPLE_CHARS, "p20", "n170"])
    shown = ExampleSelector(at_the_limit, vectors, k=3).select(np.array([at(0)]), ["sample"])[0]
    assert shown[-1].text == "x" * MAX_EXAMPLE_CHARS


@pytest.mark.parametrize("limit", [2, 3, 5])
def test_a_batch_shows_every_label_then_each_samples_nearest_in_turn(limit):
    def ex(name: str) -> Example:
        return Example(name, {"p": "positive", "n": "negative", "u": "neutral"}[name[0]])

    items = [
        ReviewItem("a", "a", {}, examples=(ex("u-far"), ex("p-a2"), ex("p-a1"))),
        ReviewItem("b", "b", {}, examples=(ex("n-b2"), ex("p-a1"), ex("p-b1"))),
    ]
    shown = [e.text for e in batch_examples(items, limit)]
    # Round-robin, nearest first: p-a1 p-b1 | p-a2 (p-a1) | u-far n-b2; each label goes first.
    expected = {2: ["u-far", "p-a1"], 3: ["n-b2", "u-far", "p-a1"],
                5: ["n-b2", "u-far", "p-a2", "p-b1", "p-a1"]}  # fmt: skip
    assert shown == expected[limit]
    assert batch_examples([ReviewItem("a", "a", {})], 4) == []


class RecordingReviewer:
    name = "recording"

    def __init__(self, shots: int) -> None:
        self.shots = shots
        self.items: list[ReviewItem] = []

    def review(self, items: list[ReviewItem]) -> list[Verdict]:
        self.items += items
        return [Verdict(item.id, "neutral", Source.LLM) for item in items]


@pytest.mark.parametrize("shots", [0, 2])
def test_the_hard_pool_hands_the_reviewer_its_samples_with_examples(tmp_path, shots):
    store = make_run(tmp_path, evidence=False)
    store.hard_chunk(0).unlink()
    votes = pd.read_parquet(store.chunk_votes(0))
    votes["route"] = [Route.DIRECT, Route.DIRECT, Route.REVIEW]
    votes["m.label"] = votes["label"]
    write_parquet(votes, store.chunk_votes(0))
    member = CommitteeMember(id="org/m", slug="m", source="x", labels=LABELS)
    reviewer = RecordingReviewer(shots)

    review_chunk(store, reviewer, [member], 0, embed=CountingEmbed())

    [item] = reviewer.items
    assert item.id == "2" and item.text == "awful"
    # Chunk 0's pool: its two unanimous rows.
    expected = [] if shots == 0 else ["great stuff", "I love it"]
    assert sorted(e.text for e in item.examples) == sorted(expected)
    assert store.embeddings_path.is_file() == bool(shots)


def test_an_agreed_row_shown_as_an_example_is_never_audited(tmp_path):
    store = make_run(tmp_path, evidence=False)
    store.hard_chunk(1).unlink()
    store.cut_chunk(0, 3)
    store.cut_chunk(1, 3)
    audit_all = store.task().model_copy(update={"audit_share": 1.0})
    write_json(audit_all.model_dump(mode="json"), store.task_path)
    votes = pd.read_parquet(store.chunk_votes(1))  # rows 3, 4 agreed; row 5 routed
    votes["route"] = [Route.DIRECT, Route.DIRECT, Route.REVIEW]
    votes["m.label"] = votes["label"]
    write_parquet(votes, store.chunk_votes(1))
    member = CommitteeMember(id="org/m", slug="m", source="x", labels=LABELS)
    reviewer = RecordingReviewer(shots=3)

    review_chunk(store, reviewer, [member], 1, embed=CountingEmbed())
    shown = set(read_json(store.shots_chunk(1))["ids"])
    assert "4" in shown  # the pool's only neutral row, agreed on in chunk 1
    audit_chunk(store, reviewer, [member], 1, embed=CountingEmbed())

    audited = set(pd.read_parquet(store.audit_chunk(1))["id"])
    assert audited == {"3"}
    # The audit was asked with the examples the routed row was: one prompt start for the chunk.
    assert {item.examples for item in reviewer.items[1:]} == {reviewer.items[0].examples}
