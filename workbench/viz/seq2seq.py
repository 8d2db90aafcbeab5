"""Cross-attention figures: pure functions from plain tensors and token strings to Plotly figures.

A cross-attention matrix has one row per target token (the step that wrote it) and one column
per source token, so the heatmaps put the target on y (top to bottom) and the source on x. Unlike
the self-attention figures of `workbench.viz.attention` the two axes hold different texts.
Every layer/head or training-step choice is a Plotly `updatemenus`/`sliders` control, so the
figures work in static HTML; `workbench.viz.widgets.TranslationExplorer` redraws
`cross_attention_heatmap` live as a user types.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..data import require_columns
from .attention import ATTENTION_COLORS, MAX_WIDTH, _as_array, head_grid, token_labels
from .evaluation import LABELLED_POINTS, label_room

CROSS_HOVER = "target %{y}<br>source %{x}<br>weight %{z:.3f}<extra></extra>"


def _check_axes(weights: np.ndarray, source_tokens: Sequence[str], target_tokens: Sequence[str]) -> None:
    T, S = weights.shape[-2:]
    if len(source_tokens) != S or len(target_tokens) != T:
        raise ValueError(f"cross-attention is (T={T}, S={S}) but {len(target_tokens)} target and {len(source_tokens)} "
                         "source tokens were given; pass the tokens of the pair the attention was captured on "
                         "(CrossAttention.target_tokens, .source_tokens)")


def _size(S: int, T: int) -> tuple[int, int]:
    return min(MAX_WIDTH, 260 + 24 * S), min(800, 220 + 26 * T)


def cross_attention_heatmap(weights, source_tokens: Sequence[str], target_tokens: Sequence[str],
                            title: str | None = None) -> go.Figure:
    """One head's (or a mean of heads') cross-attention as a heatmap.

    Args:
        weights: (T, S) tensor or array; row t is the weights of the step writing target token t.
        source_tokens: S display strings (x axis); target_tokens: T display strings (y axis).
    Returns:
        a Figure with one Heatmap trace: z = weights, x = "i:token" source labels, y = target
        labels (first at the top), colour scale 0..1; hover names both tokens and the weight.
    """
    w = _as_array(weights, 2, "weights", "(T, S): one layer and head, e.g. weights[layer, head]")
    _check_axes(w, source_tokens, target_tokens)
    width, height = _size(w.shape[1], w.shape[0])
    fig = go.Figure(go.Heatmap(z=w, x=token_labels(source_tokens), y=token_labels(target_tokens), zmin=0, zmax=1,
                               colorscale=ATTENTION_COLORS, hovertemplate=CROSS_HOVER))
    fig.update_layout(title=title, width=width, height=height,
                      xaxis=dict(title="source token (attended to)", type="category", tickangle=-60),
                      yaxis=dict(title="target token (being written)", type="category", autorange="reversed"))
    return fig


def cross_attention_explorer_figure(weights, source_tokens: Sequence[str], target_tokens: Sequence[str],
                                    title: str | None = None) -> go.Figure:
    """Every (layer, head) of the cross-attention, one at a time, picked with a dropdown (static HTML).

    Args:
        weights: (n_layer, n_head, T, S).
    Returns:
        a Figure with n_layer*n_head Heatmap traces (only the first visible) and updatemenus[0]
        with one button per "layer l, head h" plus a "mean of all heads" trace and button last.
    """
    A = _as_array(weights, 4, "weights", "(n_layer, n_head, T, S)")
    L, H, T, S = A.shape
    _check_axes(A, source_tokens, target_tokens)
    x, y = token_labels(source_tokens), token_labels(target_tokens)
    panels = [(f"layer {l}, head {h}", A[l, h]) for l in range(L) for h in range(H)]
    panels.append(("mean of all heads", A.mean(axis=(0, 1))))
    fig = go.Figure([go.Heatmap(z=z, x=x, y=y, zmin=0, zmax=1, colorscale=ATTENTION_COLORS, name=name,
                                hovertemplate=f"{name}<br>" + CROSS_HOVER, visible=(k == 0))
                     for k, (name, z) in enumerate(panels)])
    buttons = [dict(label=name, method="update", args=[{"visible": [j == k for j in range(len(panels))]}])
               for k, (name, _) in enumerate(panels)]
    width, height = _size(S, T)
    fig.update_layout(title=dict(text=title, y=0.98), width=width, height=height + 60, margin=dict(t=110),
                      updatemenus=[dict(buttons=buttons, x=0.0, xanchor="left", y=1.1, yanchor="bottom")],
                      xaxis=dict(title="source token (attended to)", type="category", tickangle=-60),
                      yaxis=dict(title="target token (being written)", type="category", autorange="reversed"))
    return fig


def cross_attention_grid(weights, source_tokens: Sequence[str], target_tokens: Sequence[str],
                         title: str | None = None, show_labels: bool | None = None) -> go.Figure:
    """All cross-attention heads at once: rows are decoder layers, columns are heads.

    Args:
        weights: (n_layer, n_head, T, S).
        show_labels: token ticks on every panel; default when the grid has at most 8 panels.
    Returns:
        a Figure with n_layer*n_head Heatmap traces in layer-major order, titled "L{l} H{h}", sharing
        one 0..1 colour axis.
    """
    A = _as_array(weights, 4, "weights", "(n_layer, n_head, T, S)")
    L, H, T, S = A.shape
    _check_axes(A, source_tokens, target_tokens)
    x, y = token_labels(source_tokens), token_labels(target_tokens)
    show_labels = L * H <= 8 if show_labels is None else show_labels
    cell = (max(220, 12 * S), max(160, 14 * T)) if show_labels else (170, 120)
    return head_grid(A, x, y, CROSS_HOVER, show_labels, cell, title, spacing=(0.15, 0.35))


def cross_attention_over_checkpoints(frames: Sequence[tuple[int, object]], source_tokens: Sequence[str],
                                     target_tokens: Sequence[str], title: str | None = None) -> go.Figure:
    """One pair's cross-attention through training, with a step slider.

    Args:
        frames: (step, weights (T, S)) pairs in slider order, e.g. `CrossAttentionSnapshots.frames(layer)`.
    Returns:
        a Figure with one Heatmap per checkpoint (only the first visible) and `layout.sliders[0]`
        with one step per checkpoint, labelled by its training step.
    """
    if not frames:
        raise ValueError("no checkpoints given; pass a list of (step, weights) pairs (train with CrossAttentionSnapshots)")
    arrays = [_as_array(w, 2, f"weights of step {s}", "(T, S)") for s, w in frames]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("checkpoint weights differ in shape; capture them all on the same pair")
    _check_axes(arrays[0], source_tokens, target_tokens)
    x, y = token_labels(source_tokens), token_labels(target_tokens)
    n = len(frames)
    fig = go.Figure([go.Heatmap(z=a, x=x, y=y, zmin=0, zmax=1, colorscale=ATTENTION_COLORS, hovertemplate=CROSS_HOVER,
                                visible=(k == 0), name=f"step {s}") for k, ((s, _), a) in enumerate(zip(frames, arrays))])
    steps = [dict(label=str(s), method="restyle", args=[{"visible": [j == k for j in range(n)]}])
             for k, (s, _) in enumerate(frames)]
    width, height = _size(arrays[0].shape[1], arrays[0].shape[0])
    fig.update_layout(title=title, width=width, height=height + 100,
                      sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="step "), pad=dict(t=70))],
                      xaxis=dict(title="source token (attended to)", type="category", tickangle=-60),
                      yaxis=dict(title="target token (being written)", type="category", autorange="reversed"))
    return fig


def decoding_speed_figure(table, title: str | None = "greedy vs beam search") -> go.Figure:
    """Exact match against sentences per second, one point per decoder (a `translator.decoding_table`).

    Args:
        table: DataFrame indexed by decoder name with exact_match and sentences_per_s columns.
    """
    require_columns(table, ("exact_match", "sentences_per_s"), "pass translator.decoding_table(...)[0]")
    fig = go.Figure(go.Scatter(x=table["sentences_per_s"], y=table["exact_match"], text=list(table.index),
                               mode="markers+text", textposition="top center", marker_size=11, **LABELLED_POINTS,
                               hovertemplate="%{text}<br>%{x:.0f} sentences/s<br>exact match %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis=dict(title="sentences per second", type="log"),
                      yaxis=dict(title="exact match", range=label_room(table["exact_match"])),  # room for the top label
                      width=650, height=420)
    return fig
