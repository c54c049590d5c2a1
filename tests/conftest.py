"""Fixtures shared across the suite: tiny offline classifiers and a LocalHub of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.helpers import make_tiny_classifier

SENTIMENT = ["negative", "neutral", "positive"]


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory) -> Callable[..., Path]:
    """Factory: `tiny_classifier_dir(labels, seed=0, **card)` -> a fresh tiny model dir."""

    def make(labels: Sequence[str], seed: int = 0, **card) -> Path:
        return make_tiny_classifier(tmp_path_factory.mktemp("tiny-clf"), labels, seed, **card)

    return make


@pytest.fixture
def tiny_hub(tmp_path) -> Path:
    """A LocalHub folder: three sentiment models spelling their labels three ways (one only
    via its card) in both folder layouts, and one toxicity model."""
    root = tmp_path / "hub"
    make_tiny_classifier(
        root / "acme" / "sentiment-tweets",
        SENTIMENT,
        seed=1,
        front_matter={"tags": ["sentiment", "twitter"], "downloads": 300},
    )
    make_tiny_classifier(
        root / "labs__sentiment-short-labels",
        ["NEG", "NEU", "POS"],
        seed=2,
        front_matter={"tags": ["sentiment", "reviews"], "downloads": 200},
    )
    make_tiny_classifier(
        root / "other" / "sentiment-generic",
        ["LABEL_0", "LABEL_1", "LABEL_2"],
        seed=3,
        front_matter={"tags": ["sentiment"], "downloads": 100},
        card_body="# sentiment-generic\n\nLabel mapping:\n\n- LABEL_0: negative\n"
        "- LABEL_1: neutral\n- LABEL_2: positive\n",
    )
    make_tiny_classifier(
        root / "acme" / "toxicity",
        ["non-toxic", "toxic"],
        seed=4,
        front_matter={"tags": ["toxicity", "moderation"], "downloads": 50},
    )
    return root
