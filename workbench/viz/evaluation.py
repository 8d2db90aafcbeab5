"""Evaluation-card figures: pure functions from the tables of `workbench.evaluate` and
`workbench.metrics` to Plotly figures.

- `reliability_diagram`: accuracy against confidence per calibration bin, with the diagonal
  of perfect calibration (data: `metrics.calibration`).
- `confusion_figure`: the confusion matrix as a heatmap of counts, row-normalised shares in
  the hover (data: `metrics.confusion`).
- `per_class_figure`: every classifier's F1 (or precision, recall) of each class, side by side.
- `compression_figure`: the size / quality trade-off of `compress.compression_table`.
- `perplexity_by_document_figure`: a bar per document of `evaluate.perplexity_by_document`,
  coloured by genre and patterned by split.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
import torch

from ..data import require_columns
from ..metrics import per_class_scores
from .training import axis_title

# A scatter's point labels ("top center") may be drawn past the plot's edge instead of being cut there.
LABELLED_POINTS = dict(cliponaxis=False)


def label_room(values: Sequence[float], above: float = 0.15, below: float = 0.08) -> list[float]:
    """A y range over `values` with room for a text label above the highest point.

    Args:
        values: the points' y values (NaNs ignored).
        above, below: extra room as fractions of the values' span (of their size when all are equal).
    Returns:
        [low, high].
    """
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    if not y.size:
        return [0.0, 1.0]
    lo, hi = float(y.min()), float(y.max())
    span = hi - lo or abs(hi) or 1.0
    return [lo - below * span, hi + above * span]


def reliability_diagram(bins: pd.DataFrame, ece: float | None = None,
                        title: str | None = "reliability diagram") -> go.Figure:
    """Accuracy against confidence per bin: bars at their bins, the diagonal is perfect calibration.

    Args:
        bins: the DataFrame of `metrics.calibration` (lower, upper, count, confidence, accuracy).
        ece: shown in the title when given.
        title: figure title.
    Returns:
        a Figure with traces "accuracy" (a Bar per bin, x = bin centre, width = bin width,
        y = accuracy; empty bins have no bar; counts in hover and text), "mean confidence"
        (markers at each non-empty bin's (mean confidence, accuracy)) and "perfect calibration"
        (the y = x line).
    """
    require_columns(bins, ("lower", "upper", "count", "confidence", "accuracy"),
                    "pass the table metrics.calibration returns")
    full = bins[bins["count"] > 0]
    centre = ((full["lower"] + full["upper"]) / 2).tolist()
    width = (full["upper"] - full["lower"]).tolist()
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centre, y=full["accuracy"].tolist(), width=width, name="accuracy",
                         text=[f"n={c}" for c in full["count"]], textposition="outside",
                         customdata=full[["lower", "upper", "count", "confidence"]].to_numpy(),
                         marker_line_width=1, marker_line_color="white",
                         hovertemplate="confidence (%{customdata[0]:.2f}, %{customdata[1]:.2f}]<br>"
                                       "accuracy %{y:.3f}<br>mean confidence %{customdata[3]:.3f}<br>"
                                       "%{customdata[2]} examples<extra></extra>"))
    fig.add_trace(go.Scatter(x=full["confidence"].tolist(), y=full["accuracy"].tolist(), mode="markers",
                             name="mean confidence", marker=dict(symbol="x", size=9, color="crimson"),
                             hovertemplate="mean confidence %{x:.3f}<br>accuracy %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(dash="dash", color="gray")))
    if ece is not None:
        title = f"{title or ''} (ECE {ece:.3f})".strip()
    fig.update_layout(title=title, bargap=0, xaxis=dict(title="confidence", range=[0, 1]),
                      yaxis=dict(title="accuracy", range=[0, 1.1]))
    return fig


def confusion_figure(matrix, labels: Sequence[str], title: str | None = "confusion matrix") -> go.Figure:
    """The confusion matrix as a heatmap: true class on y (top to bottom), predicted on x.

    Args:
        matrix: (n, n) counts, row = true class (as `metrics.confusion`).
        labels: n class names.
        title: figure title.
    Returns:
        a Figure with one Heatmap: z = counts (also written in the cells), customdata = the
        row-normalised shares (recall on the diagonal), shown in the hover.
    """
    m = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square (n, n), got shape {m.shape}")
    if len(labels) != m.shape[0]:
        raise ValueError(f"{len(labels)} labels for a {m.shape[0]}-class matrix; pass one label per class")
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    labels = [str(x) for x in labels]
    fig = go.Figure(go.Heatmap(z=m, x=labels, y=labels, customdata=share, colorscale="Blues",
                               text=m.astype(np.int64), texttemplate="%{text}",
                               hovertemplate="true %{y}<br>predicted %{x}<br>count %{z:.0f}<br>"
                                             "share of true %{y}: %{customdata:.1%}<extra></extra>"))
    side = 250 + 60 * len(labels)
    fig.update_layout(title=title, width=side + 100, height=side,
                      xaxis=dict(title="predicted", type="category"),
                      yaxis=dict(title="true", type="category", autorange="reversed"))
    return fig


def per_class_figure(confusions: Mapping[str, Any], labels: Sequence[str], metric: str = "f1",
                     title: str | None = "per-class F1") -> go.Figure:
    """One score per class and classifier: grouped bars, a group per class, a bar per classifier.

    Shows at a glance whether the classifiers fail on the same class (a hard class) or each on
    its own, which a single confusion matrix cannot.

    Args:
        confusions: classifier name -> its (C, C) confusion counts (row = true class, as
            `metrics.confusion`), or `evaluate.classifier_report`'s details (name -> {"confusion": ...}).
        labels: C class names.
        metric: "f1", "precision" or "recall" (0 where undefined, as `metrics.per_class_table`).
        title: figure title.
    Returns:
        a Figure with one Bar trace per classifier (in the mapping's order): x = the class names,
        y = that classifier's score of each class.
    """
    if metric not in ("f1", "precision", "recall"):
        raise ValueError(f"metric must be 'f1', 'precision' or 'recall', got {metric!r}")
    if not confusions:
        raise ValueError("no classifiers given; pass {name: confusion matrix}")
    fig = go.Figure()
    for name, matrix in confusions.items():
        matrix = matrix["confusion"] if isinstance(matrix, Mapping) else matrix
        m = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
        if m.shape != (len(labels), len(labels)):
            raise ValueError(f"{name}: a {m.shape} confusion matrix for {len(labels)} labels; "
                             "pass one (C, C) matrix per classifier and C labels")
        precision, recall, f1, _, _ = per_class_scores(m)
        scores = {"precision": precision, "recall": recall, "f1": f1}
        fig.add_trace(go.Bar(x=[str(x) for x in labels], y=scores[metric].tolist(), name=str(name),
                             hovertemplate=f"{name}<br>%{{x}}: {metric} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title, barmode="group", xaxis=dict(title="true class", type="category"),
                      yaxis=dict(title={"f1": "F1", "precision": "precision", "recall": "recall"}[metric],
                                 range=[0, 1]), legend_title_text="classifier")
    return fig


def compression_figure(table: pd.DataFrame, y: str = "perplexity", x: str | None = None,
                       title: str | None = "compression: size vs quality") -> go.Figure:
    """One labelled point per compression variant: size against quality.

    The default x is the zipped size: pruning zeroes weights but keeps the tensors' shapes, so
    `size_mb` is the same for every pruned variant and only compression shows what it saved.

    Args:
        table: `compress.compression_table` (variant plus the x and y columns).
        y: "perplexity" (lower is better), "macro_f1" or any other column.
        x: "zipped_mb", "size_mb" or "tokens_per_s"; default "zipped_mb" (`compression_table`
            always has it), "size_mb" for a table without it.
        title: figure title.
    Returns:
        a Figure with one Scatter trace (markers + the variant names as text), in table order;
        the axes are titled with their units (`axis_title`); the y range leaves room for the
        highest point's label (`label_room`).
    """
    if x is None:
        x = "zipped_mb" if "zipped_mb" in table.columns else "size_mb"
    require_columns(table, ("variant", x, y), "pass the table compress.compression_table returns")
    fig = go.Figure(go.Scatter(x=table[x].tolist(), y=table[y].tolist(), mode="markers+text", name=y,
                               text=table["variant"].tolist(), textposition="top center",
                               marker=dict(size=11), **LABELLED_POINTS,
                               hovertemplate=f"%{{text}}<br>{axis_title(x)} %{{x:.3f}}<br>"
                                             f"{axis_title(y)} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=axis_title(x),
                      yaxis=dict(title=axis_title(y), range=label_room(table[y])))
    return fig


# bar patterns of the splits (or any second grouping) of `perplexity_by_document_figure`, in order of appearance
SPLIT_PATTERNS = ("", "/", ".", "x", "+")


def perplexity_by_document_figure(df: pd.DataFrame, y: str = "bits_per_char", color: str | None = "genre",
                                  pattern: str | None = "split", x_title: str = "document",
                                  title: str | None = "held-out documents") -> go.Figure:
    """A bar per document (e.g. per held-out play), coloured by genre and patterned by split.

    Args:
        df: `evaluate.perplexity_by_document` (document plus `y`), or `evaluate.lm_by_split`'s
            first table (with a `split` column).
        y: "bits_per_char" (comparable across tokenizers), "perplexity" or "cross_entropy".
        color: column whose groups get a colour each; ignored when absent or all empty.
        pattern: column whose groups get a bar pattern each (`SPLIT_PATTERNS`: the first solid,
            the next hatched "/"); ignored when absent or all empty.
        x_title: the x axis' title (what a document is, e.g. "held-out play").
        title: figure title.
    Returns:
        a Figure with one Bar trace per (color, pattern) group, named "genre · split" (a single
        trace named `y` without groups); documents keep the frame's order on x; the y axis is
        titled with its unit (`axis_title`).
    """
    require_columns(df, ("document", y), "pass the table evaluate.perplexity_by_document returns")

    def used(column: str | None) -> bool:
        return column is not None and column in df.columns and df[column].astype(str).str.len().gt(0).any()

    keys = [c for c in (color, pattern) if used(c)]
    groups = df.groupby(keys, sort=False) if keys else [((y,), df)]
    colours = {v: i for i, v in enumerate(df[color].unique())} if color in keys else {}
    patterns = ({v: SPLIT_PATTERNS[i % len(SPLIT_PATTERNS)] for i, v in enumerate(df[pattern].unique())}
                if pattern in keys else {})
    palette = plotly.colors.qualitative.Plotly
    fig = go.Figure()
    for name, rows in groups:
        name = name if isinstance(name, tuple) else (name,)
        group = dict(zip(keys, name))
        marker = {}
        if color in group:
            marker["color"] = palette[colours[group[color]] % len(palette)]
        if pattern in group:
            marker["pattern"] = dict(shape=patterns[group[pattern]])
        label = " · ".join(str(v) for v in name)
        fig.add_trace(go.Bar(x=rows["document"].tolist(), y=rows[y].tolist(), name=label, marker=marker,
                             hovertemplate=f"%{{x}}<br>{axis_title(y)} %{{y:.4f}}<extra>{label}</extra>"))
    fig.update_layout(title=title, yaxis_title=axis_title(y), showlegend=bool(keys), barmode="overlay",
                      xaxis=dict(title=x_title, type="category", categoryorder="array",
                                 categoryarray=df["document"].tolist()))
    return fig
