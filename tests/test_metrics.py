"""workbench.metrics, the classification metrics fine-tuning and the evaluation card share: against
scikit-learn, on hand-checked cases (accuracy, macro and per-class scores, ECE), and bad input."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from workbench import metrics as mt


def test_classification_metrics_on_a_hand_checked_case():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 1, 0]  # class 2 is never predicted
    assert mt.confusion(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 1, 0]]
    m = mt.classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 6)
    # a: P 1/2, R 1/2, F1 1/2; b: P 2/4, R 1, F1 2/3; c: P 0 (never predicted), R 0, F1 0
    assert m["macro_precision"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    table = mt.per_class_table(y_true, y_pred, ["a", "b", "c"])
    assert table["support"].tolist() == [2, 2, 2] and table["predicted"].tolist() == [2, 4, 0]
    assert table.loc[2, ["precision", "recall", "f1"]].tolist() == [0, 0, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_classes = 4
    y_true = rng.integers(0, n_classes, 50)
    y_pred = np.where(rng.random(50) < 0.5, y_true, rng.integers(0, 3, 50))  # class 3 rarely predicted
    if seed == 0:
        y_pred[y_pred == 3] = 0  # and never: its precision is 0/0, which counts as 0 (zero_division=0)
    labels = list(range(n_classes))
    m = mt.classification_metrics(y_true, y_pred, ["w", "x", "y", "z"])
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    pm, rm, fm, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    _, _, fw, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert (m["macro_precision"], m["macro_recall"], m["macro_f1"]) == pytest.approx((pm, rm, fm))
    assert m["weighted_f1"] == pytest.approx(fw)
    table = mt.per_class_table(y_true, y_pred, ["w", "x", "y", "z"])
    np.testing.assert_allclose(table[["precision", "recall", "f1"]].to_numpy().T, [p, r, f])
    assert table["support"].tolist() == s.tolist()
    assert (mt.confusion(y_true, y_pred, n_classes) == confusion_matrix(y_true, y_pred, labels=labels)).all()
    # what a training loop logs, and the JSON block a fine-tuning run writes, are the same numbers
    assert mt.accuracy(y_true, y_pred) == pytest.approx(m["accuracy"]) and mt.macro_f1(y_true, y_pred, 4) == pytest.approx(fm)
    block = mt.split_metrics(y_true, y_pred, ["w", "x", "y", "z"], prefix="test_")
    assert block["test_accuracy"] == pytest.approx(m["accuracy"]) and block["test_macro_f1"] == pytest.approx(fm)
    assert block["test_confusion"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert block["test_per_class"]["z"] == pytest.approx({"precision": p[3], "recall": r[3], "f1": f[3], "support": s[3]})


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="outside 0..1"):
        mt.confusion([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="one prediction per example"):
        mt.confusion([0, 1], [0], 2)
    with pytest.raises(ValueError, match="softmax"):
        mt.calibration([[2.0, -1.0]], [0])


def test_ece_on_a_hand_computed_example():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.35, 0.65], [0.4, 0.6], [0.3, 0.7]])
    y = np.array([0, 1, 1, 0, 1])
    # 2 bins: (0, .5] is empty; (.5, 1] holds everything. Confidences .9 .8 .65 .6 .7 (mean .73),
    # correct: yes no yes no yes (accuracy .6): ECE = |.6 - .73| = .13
    ece, bins = mt.calibration(probs, y, n_bins=2)
    assert ece == pytest.approx(0.13)
    assert bins["count"].tolist() == [0, 5] and math.isnan(bins.loc[0, "accuracy"])
    # 5 bins of .2: (.4,.6] {.6: wrong}, (.6,.8] {.8 wrong, .65 right, .7 right}, (.8,1] {.9 right}
    ece, bins = mt.calibration(probs, y, n_bins=5)
    assert bins["count"].tolist() == [0, 0, 1, 3, 1]
    expected = (1 * abs(0 - 0.6) + 3 * abs(2 / 3 - (0.8 + 0.65 + 0.7) / 3) + 1 * abs(1 - 0.9)) / 5
    assert ece == pytest.approx(expected)
    m = mt.classification_metrics(y, probs.argmax(1), ["a", "b"], probs=probs, n_bins=5)
    assert m["ece"] == pytest.approx(expected)
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.65, 0.4, 0.7])))


def test_summarize_confusion_names_the_recall_and_the_most_confused_pair():
    # rows = true class: b is recognised best; a and c are mistaken for each other 160 + 158 times,
    # more than a/b (29 + 67) or b/c (97 + 53), though no single cell of b's row or column is small
    m = [[70, 29, 160], [67, 171, 97], [158, 53, 190]]
    s = mt.summarize_confusion(m, ["a", "b", "c"])
    assert s.recall == pytest.approx({"a": 70 / 259, "b": 171 / 335, "c": 190 / 401})
    assert s.confused == ("a", "c") and s.confused_count == 318 and s.n == 995
    assert str(s).splitlines() == ["recall per true class: a 27%, b 51%, c 47% (best recognised: b; worst: a)",
                                   "most confused pair: a and c, 318 of 995 examples (32%) predicted as the other"]
    # the pair counts both directions: one large cell alone does not decide it
    assert mt.summarize_confusion([[5, 4, 0], [0, 5, 3], [0, 3, 5]], ["a", "b", "c"]).confused == ("b", "c")
    # the recall agrees with per_class_table on the same predictions
    y_true, y_pred = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 0]
    s = mt.summarize_confusion(mt.confusion(y_true, y_pred, 3), ["a", "b", "c"])
    assert list(s.recall.values()) == mt.per_class_table(y_true, y_pred, ["a", "b", "c"])["recall"].tolist()
    perfect = mt.summarize_confusion(np.eye(2, dtype=int) * 3, ["a", "b"])
    assert perfect.confused is None and str(perfect).splitlines() == [
        "recall per true class: a 100%, b 100%", "no example was predicted as another class"]


def test_summarize_confusion_refuses_what_is_not_a_count_matrix():
    with pytest.raises(ValueError, match="square"):
        mt.summarize_confusion([[1, 2, 3]], ["a"])
    with pytest.raises(ValueError, match="one label per class"):
        mt.summarize_confusion([[1, 0], [0, 1]], ["a", "b", "c"])
    with pytest.raises(ValueError, match="not row shares"):
        mt.summarize_confusion([[0.5, 0.5], [0.2, 0.8]], ["a", "b"])
