"""The report: the committee table marks the label maps the user gave."""

import io

from rich.console import Console

import agent.cli.progress
from agent.cli.progress import ProgressView, describe_label_map
from agent.committee.scores import classification_scores
from agent.domain import Aligned, Selected
from agent.pipeline.report import render_report, write_plots
from tests.fixtures.runs import make_store


def metrics(models: list[dict]) -> dict:
    return {
        "task": "market sentiment",
        "rows": 2,
        "labeled": 2,
        "labels": ["bearish", "bullish", "neutral"],
        "k": 1,
        "epsilon": 1.0,
        "beta": 10,
        "escalated": 0,
        "escalation_rate": 0.0,
        "llm": {"calls": 0, "cache_hits": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0},
        "by_source": {"committee": 2},
        "committee_capped": {"count": 0},
        "by_label": {"neutral": 2},
        "models": models,
        "chunk_rows": [2],
        "escalation_per_chunk": [0.0],
        "finetune_cycles": [],
        "seconds_by_stage": {},
    }


def test_the_committee_table_marks_the_users_label_map():
    mapping = {"negative": "bearish", "neutral": "neutral", "POS": "bullish"}
    evidence = {"negative": "user", "neutral": "exact", "POS": "synonym of the label word ..."}
    report = render_report(
        metrics([{"id": "org/m", "label_map": mapping, "label_evidence": evidence}])
    )
    assert "| org/m | negative → bearish (user), neutral → neutral, POS → bullish |" in report
    assert "(user): from your --label-map" in report
    # metrics.json of an older run has no evidence: the table still renders, unmarked.
    old = render_report(metrics([{"id": "org/m", "label_map": mapping}]))
    assert "| org/m | negative → bearish, neutral → neutral, POS → bullish |" in old
    assert "(user)" not in old


def test_the_committee_table_says_what_a_learned_map_was_learned_from():
    mapping = {"LABEL_0": "bearish", "LABEL_1": "neutral", "LABEL_2": "bullish"}
    learned = {"teacher": "the reviewer", "rows": 40, "agreement": 0.85, "chance": 0.41}
    report = render_report(
        metrics(
            [{"id": "org/m", "label_map": mapping, "label_evidence": {}, "learned_map": learned}]
        )
    )
    assert (
        "| org/m | LABEL_0 → bearish, LABEL_1 → neutral, LABEL_2 → bullish; learned from 40 rows "
        "the reviewer labeled (agreement 85%, chance 41%) |" in report
    )


def test_the_run_shows_the_renamed_labels_and_which_the_user_gave():
    line = describe_label_map(
        {"negative": "bearish", "neutral": "neutral", "POS": "bullish"},
        {"negative": "user", "neutral": "exact", "POS": "synonym"},
    )
    assert line == "negative → bearish (your --label-map), POS → bullish"
    assert describe_label_map({"neutral": "neutral"}, {}) == ""


def test_the_report_shows_per_class_scores_and_the_confusion_matrix_against_gold():
    gold = ["bearish", "bearish", "bullish", "neutral"]
    predicted = ["bearish", "neutral", "bullish", "neutral"]
    scores = classification_scores(predicted, gold, ["bearish", "bullish", "neutral"])
    report = render_report({**metrics([]), "accuracy_vs_gold": 0.75, "scores_vs_gold": scores})
    assert "## Against the gold column" in report
    assert "| bearish | 1.000 | 0.500 | 0.667 | 2 |" in report
    assert "| neutral | 0.500 | 1.000 | 0.667 | 1 |" in report
    assert "| true \\ predicted | bearish | bullish | neutral | (no label) |" in report
    assert "| bearish | 1 | 0 | 1 | 0 |" in report
    assert "## Against the gold column" not in render_report(metrics([]))


def test_a_run_whose_cycles_all_stood_down_draws_no_gate_plot(tmp_path):
    store = make_store(tmp_path, n=4, chunk_size=2, beta=1)
    stood_down = {"cycle": 1, "chunks": [0], "models": {}, "skipped": "reviewer worse"}
    data = {**metrics([]), "escalation_per_chunk": [], "finetune_cycles": [stood_down]}
    assert "gate" not in write_plots(store, data)
    trained = {"cycle": 2, "chunks": [1], "models": {"m": {"gate_before": 0.5,
               "gate_after": 0.6, "kept": True}}}  # fmt: skip
    plots = write_plots(store, {**data, "finetune_cycles": [stood_down, trained]})
    assert (store.root / plots["gate"]).is_file()


def test_the_run_prints_selection_time_and_learned_maps(monkeypatch):
    screen = Console(file=io.StringIO(), width=250)
    monkeypatch.setattr(agent.cli.progress, "console", screen)
    learned = {"teacher": "the reviewer", "rows": 40, "agreement": 0.85, "chance": 0.41}
    with ProgressView(quiet=False) as view:
        view(Selected(["a/x", "b/y"], 0.2, considered=8, seconds=41.2))
        view(
            Aligned(
                maps={"a/x": {"negative": "bearish", "neutral": "neutral"}},
                evidence={"a/x": {"negative": "learned on 40 rows: …"}},
                learned={"a/x": learned},
            )
        )
    out = screen.file.getvalue()
    assert "selected 2 of 8 candidates in 41 s" in out
    assert (
        "labels of a/x: negative → bearish (learned from 40 rows the reviewer labeled: "
        "agreement 85%, chance 41%)" in out
    )


def test_the_report_says_whether_the_reviewers_corrected_verdicts_were_kept():
    def accuracy(value: float) -> dict:
        return {"accuracy": value, "low": value - 0.05, "high": value + 0.05, "rows": 200}

    trust = {
        "labels": ["bearish", "bullish", "neutral"],
        "known_rows": 200,
        "final_labels": {"standing": "posterior", "estimated_accuracy": accuracy(0.7)},
        "reviewer_debias": {
            "kept": "as answered",
            "corrected": accuracy(0.61),
            "as answered": accuracy(0.66),
        },
        "sources": {},
    }
    report = render_report({**metrics([]), "trust": trust})
    assert (
        "The reviewer's verdicts with its lean divided out, on the known rows: 61.0% [56.0%, "
        "66.0%] on 200; as it answered them: 66.0% [61.0%, 71.0%] on 200; kept: as answered."
    ) in report
    assert "lean divided out" not in render_report(
        {**metrics([]), "trust": {k: v for k, v in trust.items() if k != "reviewer_debias"}}
    )


def _trust(test: dict) -> dict:
    interval = {"accuracy": 0.8, "low": 0.75, "high": 0.85, "rows": 2.0}
    return {
        "labels": ["bearish", "bullish", "neutral"],
        "known_rows": 0,
        "final_labels": {"standing": "posterior", "estimated_accuracy": interval},
        "committee_weights": {"org/a": 0.7, "org/b": 0.3},
        "committee_weights_test": test,
        "sources": {},
    }


def test_the_report_gives_the_members_weights_only_where_they_are_used():
    used = render_report({**metrics([]), "trust": _trust({"p": 0.001, "used": True})})
    assert "weighed by how well their probabilities explain" in used
    assert "(against equal weights, p = 0.001): org/a 0.70, org/b 0.30." in used
    alike = render_report({**metrics([]), "trust": _trust({"p": 0.4, "used": False})})
    assert "The committee's members count alike" in alike and "(p = 0.40)" in alike
    assert "org/a 0.70" not in alike


def test_the_report_says_what_the_estimates_interval_counts():
    """With known rows the interval counts the calibration's error as they measured it; without,
    the report says that nothing measured the confidence."""
    unmeasured = render_report({**metrics([]), "trust": _trust({"p": 0.4, "used": False})})
    assert "80.0% [75.0%, 85.0%] on 2 rows (90% interval: which rows are right; no known" in (
        unmeasured
    )
    calibrated = {
        **_trust({"p": 0.4, "used": False}),
        "calibration": {"method": "sigmoid", "rows": 200, "ece_before": 0.06, "ece": 0.03},
    }
    measured = render_report({**metrics([]), "trust": calibrated})
    assert "how far the confidence may be off as the known rows measured it" in measured
    assert "Calibration (sigmoid, 200 known rows)" in measured
    pulled = {**calibrated, "calibration": {**calibrated["calibration"], "prior": 30.0}}
    assert (
        "Calibration (sigmoid, held to the confidence as it is with strength 30, 200 known rows)"
        in render_report({**metrics([]), "trust": pulled})
    )
    assert "no known rows measured the confidence" not in measured


def test_the_report_warns_that_the_reviewer_is_only_estimated_without_known_rows():
    def versus(basis: str) -> dict:
        interval = {"accuracy": 0.6, "low": 0.55, "high": 0.65, "rows": 200}
        return {"basis": basis, "reviewer": interval, "plurality": interval, "worse": False}

    warning = "Give 30 or more gold rows (`--gold-column`) to measure it."
    for basis, warned in (("estimate", True), ("known rows", False)):
        trust = {**_trust({"p": 0.4, "used": False}), "reviewer_vs_committee": versus(basis)}
        report = render_report({**metrics([]), "trust": trust})
        assert f"On the rows routed to review ({basis})" in report
        assert (warning in report) == warned
