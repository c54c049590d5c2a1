import pytest

from agent.committee.scores import NO_LABEL, accuracy, classification_scores, macro_f1


def test_accuracy_and_macro_f1_count_a_missing_prediction_as_wrong():
    gold = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", None]
    assert accuracy(pred, gold) == 0.5
    # a: tp1 fp0 fn1 -> 2/3 ; b: tp1 fp1 fn1 -> 1/2
    assert macro_f1(pred, gold, ["a", "b"]) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_per_class_scores_and_confusion_matrix():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", float("nan"), "a"]
    scores = classification_scores(pred, gold, ["a", "b", "c"])
    assert scores["rows"] == 5 and scores["accuracy"] == 0.4
    # a: predicted twice, right once; true twice, found once.
    assert scores["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert scores["per_class"]["c"]["support"] == 1 and scores["per_class"]["c"]["f1"] == 0.0
    confusion = scores["confusion"]
    assert confusion["columns"] == ["a", "b", "c", NO_LABEL]
    # Rows: the true label; b's missing prediction lands in the last column.
    assert confusion["matrix"] == [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]]
    assert scores["macro_f1"] == pytest.approx(round((0.5 + 0.5 + 0.0) / 3, 4))


def test_nothing_scored_says_so():
    assert classification_scores([], [], ["a"]) == {"rows": 0}
