"""Shared pieces of the end-to-end tests: a tiny hub and keyword data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.models import make_keyword_classifier

LABELS = ["negative", "neutral", "positive"]
WORDS = {
    "good": "positive",
    "great": "positive",
    "bad": "negative",
    "awful": "negative",
    "ok": "neutral",
    "fine": "neutral",
}


# Every member knows the probe words selection checks with; each misses a different pair of
# the data's keywords (reading them as neutral), so the committee disagrees on some rows only.
PROBE_WORDS = {
    "positive": ["love", "wonderful", "happy", "perfect"],
    "negative": ["hate", "terrible", "angry", "worst"],
}
MISSED_WORDS = [(), ("great", "awful"), ("good", "bad")]


@pytest.fixture(scope="session")
def hub_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    for index, missed in enumerate(MISSED_WORDS):
        keywords = {
            label: PROBE_WORDS[label]
            + [w for w, y in WORDS.items() if y == label and w not in missed]
            for label in PROBE_WORDS
        }
        make_keyword_classifier(
            root / f"tiny__sentiment-{index}",
            LABELS,
            keywords,
            "neutral",
            front_matter={"base_model": f"tiny/base-{index}", "datasets": [f"set-{index}"]},
        )
    return root


def write_data(path: Path, n: int, blanks: tuple[int, ...] = (3,)) -> Path:
    """n rows `the day was <word> number i` with the word's label in `gold`; blanks are empty."""
    words = list(WORDS)
    lines = ["text,gold"]
    for i in range(n):
        if i in blanks:
            lines.append(",neutral")
            continue
        word = words[i % len(words)]
        lines.append(f"the day was {word} number {i},{WORDS[word]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
