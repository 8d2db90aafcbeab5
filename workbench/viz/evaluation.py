"""Evaluation-card figures: pure functions from the tables of `workbench.evaluate` and
`workbench.metrics` to Plotly figures.

- `reliability_diagram`: accuracy against confidence per calibration bin, with the diagonal
  of perfect calibration (data: `metrics.calibration`).
- `confusion_figure`: the confusion matrix as a heatmap of counts, row-normalised shares in
  the hover (data: `metrics.confusion`).
- `compression_figure`: the size / quality trade-off of `compress.compression_table`.
- `perplexity_by_document_figure`: a bar per document of `evaluate.perplexity_by_document`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from .checks import require_columns


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


def compression_figure(table: pd.DataFrame, y: str = "perplexity", x: str = "size_mb",
                       title: str | None = "compression: size vs quality") -> go.Figure:
    """One labelled point per compression variant: size against quality.

    Args:
        table: `compress.compression_table` (variant plus the x and y columns).
        y: "perplexity" (lower is better), "macro_f1" or any other column.
        x: "size_mb", "zipped_mb" or "tokens_per_s".
        title: figure title.
    Returns:
        a Figure with one Scatter trace (markers + the variant names as text), in table order.
    """
    require_columns(table, ("variant", x, y), "pass the table compress.compression_table returns")
    fig = go.Figure(go.Scatter(x=table[x].tolist(), y=table[y].tolist(), mode="markers+text", name=y,
                               text=table["variant"].tolist(), textposition="top center",
                               marker=dict(size=11),
                               hovertemplate=f"%{{text}}<br>{x} %{{x:.3f}}<br>{y} %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y)
    return fig


def perplexity_by_document_figure(df: pd.DataFrame, y: str = "bits_per_char", color: str | None = "genre",
                                  title: str | None = "held-out documents") -> go.Figure:
    """A bar per document (e.g. per held-out play), coloured by genre when there is one.

    Args:
        df: `evaluate.perplexity_by_document` (document plus `y`).
        y: "bits_per_char" (comparable across tokenizers), "perplexity" or "cross_entropy".
        color: column grouping bars into traces; ignored when absent or all empty.
        title: figure title.
    Returns:
        a Figure with one Bar trace per group (a single trace named `y` without groups);
        documents keep the frame's order on x.
    """
    require_columns(df, ("document", y), "pass the table evaluate.perplexity_by_document returns")
    use_color = color is not None and color in df.columns and df[color].astype(str).str.len().gt(0).any()
    groups = df.groupby(color, sort=False) if use_color else [(y, df)]
    fig = go.Figure()
    for name, rows in groups:
        fig.add_trace(go.Bar(x=rows["document"].tolist(), y=rows[y].tolist(), name=str(name),
                             hovertemplate=f"%{{x}}<br>{y} %{{y:.4f}}<extra>{name}</extra>"))
    fig.update_layout(title=title, yaxis_title=y, showlegend=bool(use_color),
                      xaxis=dict(type="category", categoryorder="array", categoryarray=df["document"].tolist()))
    return fig
