"""Evaluation-card figures, checked on their data: axis titles with units, the compression figure on the
zipped size, held-out documents told apart by split, and every classifier's per-class scores.
(The older checks of these figures are in test_evaluate.py.)"""

import numpy as np
import pandas as pd
import pytest

from workbench import metrics as mt
from workbench.viz.evaluation import compression_figure, per_class_figure, perplexity_by_document_figure

COMPRESSION = pd.DataFrame({"variant": ["baseline", "int8", "prune-50%"], "size_mb": [4.2, 1.9, 4.2],
                            "zipped_mb": [3.9, 1.7, 2.8], "perplexity": [60.0, 60.1, 62.0],
                            "macro_f1": [0.41, 0.40, 0.38]})


def test_compression_figure_plots_the_zipped_size_so_pruned_variants_spread_out():
    fig = compression_figure(COMPRESSION)
    (points,) = fig.data
    assert list(points.x) == [3.9, 1.7, 2.8]  # pruning keeps size_mb; only the zipped size shows its saving
    assert fig.layout.xaxis.title.text == "zipped size (MB)" and fig.layout.yaxis.title.text == "perplexity"
    f1 = compression_figure(COMPRESSION, y="macro_f1", x="size_mb")
    assert list(f1.data[0].x) == [4.2, 1.9, 4.2] and f1.layout.yaxis.title.text == "macro-F1"
    assert f1.layout.xaxis.title.text == "size on disk (MB)"


def test_perplexity_by_document_figure_marks_the_split_and_titles_both_axes():
    docs = pd.DataFrame({"document": ["A", "B", "C", "D"], "genre": ["comedy", "tragedy", "comedy", "comedy"],
                         "split": ["val", "val", "test", "test"], "bits_per_char": [2.0, 2.5, 2.2, 2.1]})
    fig = perplexity_by_document_figure(docs, x_title="held-out play")
    assert [t.name for t in fig.data] == ["comedy · val", "tragedy · val", "comedy · test"]  # first seen first
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["comedy · test"].x) == ["C", "D"] and list(by_name["comedy · test"].y) == [2.2, 2.1]
    # colour follows the genre, the pattern the split (validation solid, test hatched)
    assert by_name["comedy · val"].marker.color == by_name["comedy · test"].marker.color \
        != by_name["tragedy · val"].marker.color
    assert by_name["comedy · val"].marker.pattern.shape == by_name["tragedy · val"].marker.pattern.shape == ""
    assert by_name["comedy · test"].marker.pattern.shape == "/"
    assert fig.layout.xaxis.title.text == "held-out play" and fig.layout.yaxis.title.text == "bits per character"
    assert list(fig.layout.xaxis.categoryarray) == ["A", "B", "C", "D"]
    # without a split column: one trace per genre, no pattern
    plain = perplexity_by_document_figure(docs.drop(columns="split"))
    assert [t.name for t in plain.data] == ["comedy", "tragedy"] and plain.data[0].marker.pattern.shape is None


def test_per_class_figure_matches_per_class_table_for_every_classifier():
    labels = ["comedy", "history", "tragedy"]
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = {"a": np.array([0, 0, 2, 1, 0, 2, 2, 1, 2]), "b": np.array([0, 0, 0, 0, 0, 0, 2, 2, 2])}
    details = {name: {"confusion": mt.confusion(y_true, p, 3), "ece": 0.1} for name, p in preds.items()}
    fig = per_class_figure(details, labels)
    assert [t.name for t in fig.data] == ["a", "b"] and list(fig.data[0].x) == labels
    for trace, p in zip(fig.data, preds.values()):
        assert list(trace.y) == pytest.approx(mt.per_class_table(y_true, p, labels)["f1"].tolist())
    assert fig.data[1].y[1] == 0.0  # "b" never predicts history: F1 0, not NaN
    recall = per_class_figure({"a": details["a"]["confusion"]}, labels, metric="recall")
    assert list(recall.data[0].y) == pytest.approx(mt.per_class_table(y_true, preds["a"], labels)["recall"].tolist())
    assert fig.layout.yaxis.title.text == "F1" and fig.layout.xaxis.title.text == "true class"
    with pytest.raises(ValueError, match="one \\(C, C\\) matrix per classifier"):
        per_class_figure({"a": np.eye(2)}, labels)
    with pytest.raises(ValueError, match="metric must be"):
        per_class_figure(details, labels, metric="accuracy")


def test_compression_figure_leaves_room_for_the_top_points_label():
    fig = compression_figure(COMPRESSION)
    low, high = fig.layout.yaxis.range
    assert low < 60.0 and high >= 62.0 + 0.1 * 2.0  # "prune-50%" sits at the top
    assert fig.data[0].cliponaxis is False
