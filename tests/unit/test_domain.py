import json

import pytest

from agent.domain import CommitteeMember

# One entry of models.json's `models` as runs wrote it before CommitteeMember existed:
# selection's Candidate.to_json, then `inverse_label_map` appended by align_labels.
OLD_ENTRY = json.loads(
    """{
  "id": "acme/sentiment-tweets", "slug": "acme__sentiment-tweets",
  "source": "/hub/acme/sentiment-tweets", "labels": ["NEG", "NEU", "POS"],
  "similarity": 0.6123,
  "label_map": {"NEG": "negative", "NEU": "neutral", "POS": "positive"},
  "label_evidence": {"NEG": "synonym", "NEU": "synonym", "POS": "synonym"},
  "rejected": null, "license": "mit", "size_bytes": 123456, "base_model": "tiny/base",
  "datasets": ["tweets"], "score": 0.5432,
  "score_parts": {"similarity": 0.6123, "label_fit": 0.9, "popularity": 0.2},
  "many_to_one": {}, "downloads": 300, "chosen": true, "note": null,
  "smoke": {"rows": 50, "label_share": {"positive": 0.5, "negative": 0.5},
            "probe_accuracy": 1.0, "probe_flags": [], "seconds": 0.42, "error": null},
  "expected_escalation": 0.18,
  "inverse_label_map": {"negative": "NEG", "neutral": "NEU", "positive": "POS"}
}"""
)


def test_an_old_entry_reads_into_typed_fields():
    member = CommitteeMember.from_dict(OLD_ENTRY)
    assert (member.id, member.slug, member.source) == (
        "acme/sentiment-tweets",
        "acme__sentiment-tweets",
        "/hub/acme/sentiment-tweets",
    )
    assert member.labels == ["NEG", "NEU", "POS"]
    assert member.label_map["POS"] == "positive" and member.label_evidence["NEG"] == "synonym"
    assert member.inverse_label_map == {"negative": "NEG", "neutral": "NEU", "positive": "POS"}
    assert member.expected_escalation == 0.18
    assert member.record["smoke"]["rows"] == 50 and member.record["chosen"] is True


@pytest.mark.parametrize("aligned", [True, False])
def test_to_dict_gives_back_every_key_and_value_as_plain_json(aligned):
    entry = dict(OLD_ENTRY)
    if not aligned:  # as selection wrote it, before align_labels ran
        del entry["inverse_label_map"]
    data = CommitteeMember.from_dict(entry).to_dict()
    assert data == entry
    assert json.loads(json.dumps(data)) == entry
    assert ("inverse_label_map" in data) is aligned


def test_a_minimal_entry_reads_with_defaults():
    """Bench scripts and tests write only what the pipeline reads."""
    entry = {"id": "org/kw", "slug": "org__kw", "source": "/m", "labels": ["a", "b"]}
    member = CommitteeMember.from_dict(entry)
    assert member == CommitteeMember("org/kw", "org__kw", "/m", ["a", "b"])
    assert (member.label_map, member.inverse_label_map, member.expected_escalation) == (
        {},
        None,
        None,
    )
    assert CommitteeMember.from_dict(member.to_dict()) == member


def test_a_member_is_frozen():
    member = CommitteeMember.from_dict(OLD_ENTRY)
    with pytest.raises(AttributeError):
        member.slug = "other"  # type: ignore[misc]
