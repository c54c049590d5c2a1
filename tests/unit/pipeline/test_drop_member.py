"""A committee member no script could be made for is left out and the run goes on, as long as
two members are left to disagree; the reason is kept in models.json."""

from __future__ import annotations

import pytest

from agent.domain import CommitteeMember
from agent.errors import ScriptUnavailable
from agent.pipeline.nodes import drop_member
from agent.store.runstore import read_json, write_json
from tests.fixtures.runs import make_store

LABELS = ["neg", "pos"]


def _committee(store, n: int) -> list[CommitteeMember]:
    members = [
        CommitteeMember(f"org/m{i}", f"org__m{i}", f"/models/m{i}", LABELS) for i in range(n)
    ]
    write_json({"models": [m.to_dict() for m in members], "considered": []}, store.models_path)
    return members


def test_the_member_without_a_script_is_dropped_and_the_reason_kept(tmp_path):
    store = make_store(tmp_path, n=10, chunk_size=10, beta=100)
    committee = _committee(store, 3)
    why = "annotate for org/m1: the template failed its probe; the LLM's scripts failed too"
    remaining = drop_member(store, committee, ScriptUnavailable(why, "org/m1"))
    assert [m.id for m in remaining] == ["org/m0", "org/m2"]
    assert [m.id for m in store.committee()] == ["org/m0", "org/m2"]
    assert read_json(store.models_path)["dropped"] == [{"id": "org/m1", "reason": why}]


def test_a_committee_left_with_one_member_stops_with_the_reason(tmp_path):
    store = make_store(tmp_path, n=10, chunk_size=10, beta=100)
    committee = _committee(store, 2)
    with pytest.raises(ScriptUnavailable, match="no script"):
        drop_member(store, committee, ScriptUnavailable("no script", "org/m0"))
    assert [m.id for m in store.committee()] == ["org/m0", "org/m1"]


def test_an_error_about_a_model_outside_the_committee_is_not_swallowed(tmp_path):
    store = make_store(tmp_path, n=10, chunk_size=10, beta=100)
    committee = _committee(store, 3)
    with pytest.raises(ScriptUnavailable):
        drop_member(store, committee, ScriptUnavailable("elsewhere", "org/other"))
