"""Attention figures: pure functions from plain tensors (and token strings) to Plotly figures.

Nothing here sees a model: `workbench.capture` turns a model and a text into tensors, and
these functions draw them (bertviz's split). Every figure works in a static HTML export:
where a figure lets you pick a layer, head or training step it does so with Plotly's own
`updatemenus`/`sliders`, which need no Python kernel.

Conventions: a (T, T) attention matrix has queries on rows and keys on columns, so the
heatmaps put query tokens on y (top to bottom) and key tokens on x. Axis labels are
`token_labels(tokens)`, "position:token", because Plotly merges repeated category names
("the" twice would become one row). No figure is wider than `MAX_WIDTH`, so it fits
JupyterLab's output column.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..data import require_columns
from ..tokenizer import VISIBLE_MARKS  # the newline, carriage return and tab marks of tokenizer.tokens()

MAX_WIDTH = 950  # px: JupyterLab's output column is ~970 px wide with its file browser open
ATTENTION_COLORS = "Blues"  # 0 is white, so masked (future) positions read as empty
HOVER = "query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"


def _as_array(x, ndim: int, name: str, shape_help: str, square: bool = False) -> np.ndarray:
    """A tensor, array or nested list as a float64 numpy array with `ndim` dimensions (and, when
    `square`, self-attention's T × T in its last two)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {shape_help}, got shape {a.shape}")
    if square and a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must be {shape_help}, a query for every key, got shape {a.shape}; a decoder's "
                         "attention over a source draws with viz.cross_attention_heatmap")
    return a


def _check_tokens(tokens: Sequence[str], T: int) -> None:
    if tokens is None:
        raise TypeError("tokens is None: pass the list of token strings, e.g. tokenizer.tokens(ids) or "
                        "AttentionResult.tokens")
    if len(tokens) != T:
        raise ValueError(f"{len(tokens)} tokens for attention over {T} positions; pass the tokens of the "
                         "same text the attention was captured on (AttentionResult.tokens)")


def visible_token(token: str) -> str:
    """A token as an axis label can show it: leading spaces as "·" (so a space token is not blank
    and " the" reads "·the", as 01's tokenization table writes it), newline, carriage return and
    tab as "↵", "␍", "⇥" (as `tokenizer.tokens()` already does)."""
    token = str(token).translate(VISIBLE_MARKS)
    rest = token.lstrip(" ")
    return "·" * (len(token) - len(rest)) + rest


def token_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels "i:token" (`visible_token`), so repeated tokens keep their own rows and columns."""
    return [f"{i}:{visible_token(tok)}" for i, tok in enumerate(tokens)]


def attention_heatmap(weights, tokens: Sequence[str], title: str | None = None) -> go.Figure:
    """One head's attention as a heatmap.

    Args:
        weights: (T, T) tensor or array; row i is query i's weights over the keys.
        tokens: T display strings.
        title: figure title.
    Returns:
        a Figure with one Heatmap trace: z = weights, y = query labels (first at the top),
        x = key labels, colour scale fixed to 0..1.
    """
    w = _as_array(weights, 2, "weights", "(T, T)", square=True)
    _check_tokens(tokens, w.shape[1])
    labels = token_labels(tokens)
    fig = go.Figure(go.Heatmap(z=w, x=labels, y=labels, zmin=0, zmax=1,
                               colorscale=ATTENTION_COLORS, hovertemplate=HOVER))
    side = min(900, 250 + 22 * w.shape[1])
    fig.update_layout(title=title, width=min(MAX_WIDTH, side + 100), height=side,
                      xaxis=dict(title="key (attended to)", type="category", tickangle=-60),
                      yaxis=dict(title="query (attending)", type="category", autorange="reversed"))
    return fig


def attention_explorer_figure(attentions, tokens: Sequence[str], title: str | None = None) -> go.Figure:
    """Every head of every layer, one at a time, picked with a layer and a head dropdown.

    Plotly's dropdowns cannot read each other's state, so two dropdowns that both switch
    traces would forget each other's choice. Instead all heads sit in ONE heatmap laid out
    as a grid (layers down, heads across) and the layer dropdown moves the y axis onto a
    layer's band while the head dropdown moves the x axis onto a head's band. The two never
    interfere, and it all runs in the browser (static HTML included). Zooming out (double
    click) shows the whole grid.

    Args:
        attentions: (n_layer, n_head, T, T).
        tokens: T display strings.
        title: figure title.
    Returns:
        a Figure with one Heatmap of z (n_layer*T, n_head*T) where block [l, h] is
        attentions[l, h]; updatemenus[0] picks the layer, updatemenus[1] the head.
    """
    A = _as_array(attentions, 4, "attentions", "(n_layer, n_head, T, T)", square=True)
    L, H, T, _ = A.shape
    _check_tokens(tokens, T)
    labels = token_labels(tokens)
    z = A.transpose(0, 2, 1, 3).reshape(L * T, H * T)  # row l*T+i, column h*T+j = A[l, h, i, j]
    # Category names carry the layer/head so they stay unique across bands (and show on
    # hover); the ticks show only the token.
    y = [f"L{l}·{lab}" for l in range(L) for lab in labels]
    x = [f"H{h}·{lab}" for h in range(H) for lab in labels]

    def y_range(l):  # reversed: query 0 at the top
        return [l * T + T - 0.5, l * T - 0.5]

    def x_range(h):
        return [h * T - 0.5, h * T + T - 0.5]

    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, zmin=0, zmax=1, colorscale=ATTENTION_COLORS,
                               hovertemplate=HOVER))
    layer_menu = dict(buttons=[dict(label=f"layer {l}", method="relayout", args=[{"yaxis.range": y_range(l)}])
                               for l in range(L)], x=0.0, xanchor="left", y=1.12, yanchor="bottom")
    head_menu = dict(buttons=[dict(label=f"head {h}", method="relayout", args=[{"xaxis.range": x_range(h)}])
                              for h in range(H)], x=0.45, xanchor="left", y=1.12, yanchor="bottom")
    side = min(900, 250 + 22 * T)
    fig.update_layout(
        title=dict(text=title, y=0.98), width=min(MAX_WIDTH, side + 100), height=side + 60,
        updatemenus=[layer_menu, head_menu],
        margin=dict(t=120),
        xaxis=dict(title="key (attended to)", type="category", range=x_range(0), tickmode="array",
                   tickvals=x, ticktext=labels * H, tickangle=-60),
        yaxis=dict(title="query (attending)", type="category", range=y_range(0), tickmode="array",
                   tickvals=y, ticktext=labels * L),
    )
    return fig


GRID_GUIDE = "rows: layers, columns: heads; each panel: query (down) × key (across); hover for tokens"


def model_view(attentions, tokens: Sequence[str], title: str | None = "attention of every head",
               show_labels: bool | None = None) -> go.Figure:
    """All heads at once: rows are layers, columns are heads.

    Named after bertviz's model view, which draws the same layer × head grid; this one is a
    static grid of heatmaps (no lines between tokens, no JavaScript beyond Plotly's).

    Args:
        attentions: (n_layer, n_head, T, T).
        tokens: T display strings.
        title: figure title; a subtitle (`GRID_GUIDE`) says how to read the grid.
        show_labels: token tick labels on every small heatmap; default only when the grid
            and the text are small enough to read them (at most 16 heads, T <= 16).
    Returns:
        a Figure with n_layer*n_head Heatmap traces in layer-major order, titled "L{l} H{h}",
        sharing one 0..1 colour axis with a colour bar titled "weight".
    """
    A = _as_array(attentions, 4, "attentions", "(n_layer, n_head, T, T)", square=True)
    L, H, T, _ = A.shape
    _check_tokens(tokens, T)
    labels = token_labels(tokens)
    if show_labels is None:
        show_labels = L * H <= 16 and T <= 16
    cell = 160 if show_labels else max(70, min(130, 1100 // H))
    fig = head_grid(A, labels, labels, HOVER, show_labels, (cell, cell), None)  # titled below, with the guide
    fig.update_layout(title=dict(text=title or "", subtitle=dict(text=GRID_GUIDE)),
                      coloraxis_colorbar=dict(title="weight"), margin_t=110,
                      width=max(fig.layout.width, 620))  # room for the whole subtitle under a grid of 1 or 2 heads
    return fig


def head_grid(A: np.ndarray, x: Sequence[str], y: Sequence[str], hover: str, show_labels: bool,
              cell: tuple[int, int], title: str | None = None, spacing: tuple[float, float] = (0.12, 0.3)) -> go.Figure:
    """Every head's weights (n_layer, n_head, T, S) as a grid of heatmaps, rows layers and columns heads,
    titled "L{l} H{h}" and sharing one 0..1 colour axis: `model_view`'s and the cross-attention grid's
    layout. x, y: unique token labels of the keys and the queries; cell: each panel's (width, height);
    spacing: between panels, as fractions divided by the number of columns and rows. Panels shrink
    (keeping their shape) so that the figure is at most `MAX_WIDTH` wide."""
    L, H = A.shape[:2]
    scale = min(1.0, (MAX_WIDTH - 150) / (H * cell[0]))
    cell = (int(cell[0] * scale), int(cell[1] * scale))
    fig = make_subplots(rows=L, cols=H, subplot_titles=[f"L{l} H{h}" for l in range(L) for h in range(H)],
                        horizontal_spacing=spacing[0] / H, vertical_spacing=spacing[1] / L)
    for l in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=A[l, h], x=x, y=y, coloraxis="coloraxis",
                                     hovertemplate=f"L{l} H{h}<br>" + hover), row=l + 1, col=h + 1)
    fig.update_xaxes(type="category", showticklabels=show_labels, ticks="", tickfont_size=8)
    fig.update_yaxes(type="category", showticklabels=show_labels, ticks="", tickfont_size=8,
                     autorange="reversed")
    fig.update_annotations(font_size=10)  # the subplot titles
    fig.update_layout(title=title, coloraxis=dict(colorscale=ATTENTION_COLORS, cmin=0, cmax=1),
                      width=H * cell[0] + 150, height=L * cell[1] + 120, margin=dict(l=40, r=40, t=80, b=40))
    return fig


def attention_over_checkpoints(frames: Sequence[tuple[int, object]], tokens: Sequence[str],
                               title: str | None = None, labels: Sequence[str] | None = None) -> go.Figure:
    """One head's attention through training, with a slider over the checkpoints.

    Args:
        frames: (step, weights (T, T)) pairs, in the order the slider should show them.
        tokens: T display strings.
        title: figure title.
        labels: one slider label per checkpoint (e.g. ["pretrained", "fine-tuned"]) shown
            instead of "step N"; default the training steps.
    Returns:
        a Figure with one Heatmap trace per checkpoint (only the first visible) and
        `layout.sliders[0]` with one step per checkpoint, labelled by `labels[k]` or, without
        labels, by its training step (with the slider's "step " prefix).
    """
    if not frames:
        raise ValueError("no checkpoints given; pass a list of (step, weights) pairs")
    if labels is not None and len(labels) != len(frames):
        raise ValueError(f"{len(labels)} labels for {len(frames)} checkpoints; pass one label per "
                         "checkpoint or leave labels out")
    if any(not (isinstance(f, Sequence) and len(f) == 2) for f in frames):
        raise ValueError("frames must be (step, weights) pairs, e.g. AttentionSnapshots.frames(layer, head)")
    arrays = [_as_array(w, 2, f"weights of step {s}", "(T, T)", square=True) for s, w in frames]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("checkpoint weights differ in shape; capture them all on the same text")
    _check_tokens(tokens, arrays[0].shape[1])
    axis = token_labels(tokens)
    n = len(frames)
    slider_labels = [str(x) for x in labels] if labels is not None else [str(s) for s, _ in frames]
    prefix = "" if labels is not None else "step "  # a trace is named as the slider shows it: "step 100"
    fig = go.Figure([go.Heatmap(z=a, x=axis, y=axis, zmin=0, zmax=1, colorscale=ATTENTION_COLORS,
                                hovertemplate=HOVER, visible=(k == 0), name=prefix + slider_labels[k])
                     for k, a in enumerate(arrays)])
    steps = [dict(label=slider_labels[k], method="restyle", args=[{"visible": [j == k for j in range(n)]}])
             for k in range(n)]
    side = min(900, 250 + 22 * len(axis))
    fig.update_layout(
        title=title, width=min(MAX_WIDTH, side + 100), height=side + 80,
        sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix=prefix), pad=dict(t=60))],
        xaxis=dict(title="key (attended to)", type="category", tickangle=-60),
        yaxis=dict(title="query (attending)", type="category", autorange="reversed"),
    )
    return fig


def positional_encoding_figure(pe, title: str | None = "positional encoding") -> go.Figure:
    """A positional encoding table as a heatmap, positions down and dimensions across.

    Args:
        pe: (n_pos, dim), e.g. `workbench.model.sinusoidal_encoding(n_pos, dim)` or a learned `wpe`.
    """
    a = _as_array(pe, 2, "pe", "(n_pos, dim)")
    fig = go.Figure(go.Heatmap(z=a, colorscale="RdBu", zmid=0,
                               hovertemplate="position %{y}<br>dimension %{x}<br>value %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="dimension", yaxis=dict(title="position", autorange="reversed"))
    return fig


def matrix_figure(matrices: dict[str, object], row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, title: str | None = None,
                  show_values: bool | None = None,
                  axes: tuple[str, str] | list[str] | Mapping[str, tuple[str, str]] | None = None) -> go.Figure:
    """Labelled heatmaps side by side, e.g. the steps of `capture.attention_walkthrough`; more than
    three wrap onto rows (4 as 2 + 2, 5 as 3 + 2), so the figure stays within `MAX_WIDTH`.

    Each matrix has its own colour range, diverging around 0 (red negative, blue positive), with
    its own thin colour bar at its right. -inf entries (masked scores) are drawn blank and, with
    values shown, written "-∞".

    Args:
        matrices: name -> 2-D tensor/array (a 1-D one is drawn as a single row).
        row_labels: labels for the rows of every matrix with that many rows (e.g. tokens);
            others are numbered. Made unique with `token_labels`.
        col_labels: the same for columns.
        title: figure title.
        show_values: write each value in its cell; default when every matrix has <= 144 cells.
        axes: axis titles as (rows, columns), e.g. ("query", "key") (a list works too): one pair
            for every matrix, or name -> pair for some of them (the others get none).
    Returns:
        a Figure with one Heatmap per matrix, in order (row by row), each subplot titled by its name.
    """
    if not matrices:
        raise ValueError("no matrices given; pass a dict such as {'Q': Q, 'K': K}")
    arrays = {}
    for name, m in matrices.items():
        a = m.detach().float().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m, dtype=float)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise ValueError(f"matrix {name!r} has shape {a.shape}; pass 2-D matrices (index heads "
                             "into separate entries)")
        arrays[name] = a
    if axes is None:
        titles = {}
    elif isinstance(axes, (tuple, list)):  # ["query", "key"] is the same pair as ("query", "key")
        if len(axes) != 2:
            raise ValueError(f"axes={axes!r}; pass (row title, column title), e.g. ('query', 'key')")
        titles = dict.fromkeys(arrays, tuple(axes))
    elif not isinstance(axes, Mapping):
        raise TypeError(f"axes={axes!r}; pass (row title, column title), e.g. ('query', 'key'), or a dict "
                        "of them keyed by matrix name")
    else:
        titles = dict(axes)
        if unknown := set(titles) - set(arrays):
            raise ValueError(f"axes names {sorted(unknown)} are not among the matrices {list(arrays)}; "
                             "key axes by the matrices' names")
        if bad := [k for k, v in titles.items() if len(v) != 2]:
            raise ValueError(f"axes for {bad} are not pairs; give each matrix (row title, column title)")
    if show_values is None:
        show_values = all(a.size <= 144 for a in arrays.values())

    def labels(given, n):
        return token_labels(given) if given is not None and len(given) == n else [str(i) for i in range(n)]

    n = len(arrays)
    # At most 3 panels a row (more rows, evenly filled, beyond that), so the figure fits MAX_WIDTH.
    rows = -(-n // 3)
    cols = -(-n // rows)
    panel, gap, row_height, row_gap = 240, 105, 220, 120  # px; a gap holds a colour bar and the next y labels
    width = min(MAX_WIDTH, max(500, panel * cols + gap * (cols - 1)))
    height = 180 + rows * row_height + (rows - 1) * row_gap
    specs = [[{} if r * cols + c < n else None for c in range(cols)] for r in range(rows)]
    fig = make_subplots(rows=rows, cols=cols, specs=specs, subplot_titles=list(arrays),
                        horizontal_spacing=min(gap / width, 0.9 / max(cols - 1, 1)),
                        vertical_spacing=row_gap / (height - 180))
    for k, (name, a) in enumerate(arrays.items()):
        row, col = k // cols + 1, k % cols + 1
        finite = np.where(np.isfinite(a), a, np.nan)  # -inf would stretch the colour scale
        limit = np.nanmax(np.abs(finite)) if np.isfinite(finite).any() else 1.0
        text = None
        if show_values:
            text = np.where(np.isneginf(a), "-∞", np.char.mod("%.2f", np.nan_to_num(a, neginf=0.0)))
        x_domain = fig.layout[f"xaxis{k + 1 if k else ''}"].domain
        y_domain = fig.layout[f"yaxis{k + 1 if k else ''}"].domain
        fig.add_trace(go.Heatmap(z=finite, x=labels(col_labels, a.shape[1]), y=labels(row_labels, a.shape[0]),
                                 colorscale="RdBu", zmin=-limit, zmax=limit, showscale=True,
                                 colorbar=dict(x=x_domain[1] + 0.005, xanchor="left", thickness=8,
                                               y=sum(y_domain) / 2, yanchor="middle",
                                               len=0.9 * (y_domain[1] - y_domain[0]),
                                               tickfont_size=8, outlinewidth=0),
                                 text=text, texttemplate="%{text}" if show_values else None,
                                 name=name, hovertemplate=f"{name}[%{{y}}, %{{x}}] = %{{z:.3f}}<extra></extra>"),
                      row=row, col=col)
        rows_title, cols_title = titles.get(name, (None, None))
        fig.update_yaxes(title=dict(text=rows_title, standoff=2, font_size=11), row=row, col=col)
        fig.update_xaxes(title=dict(text=cols_title, standoff=2, font_size=11), row=row, col=col)
    fig.update_xaxes(type="category", tickfont_size=9)
    fig.update_yaxes(type="category", tickfont_size=9, autorange="reversed")
    fig.update_layout(title=title, width=width, height=height, plot_bgcolor="white")
    return fig


def head_grid_figure(table: pd.DataFrame, value: str, title: str | None = None) -> go.Figure:
    """A layer x head heatmap of one per-head number (e.g. `capture.attention_shift`'s tv_distance).

    Args:
        table: one row per (layer, head) with a `value` column.
    """
    require_columns(table, ("layer", "head", value), f"pass one row per (layer, head) with a {value!r} column")
    if (repeated := table.duplicated(["layer", "head"], keep="first")).any():
        pairs = list(dict.fromkeys(zip(table.loc[repeated, "layer"], table.loc[repeated, "head"])))
        shown = ", ".join(f"({l}, {h})" for l, h in pairs[:5]) + (", ..." if len(pairs) > 5 else "")
        raise ValueError(f"table has more than one row for (layer, head) {shown}; pass one row per head: "
                         f"aggregate first, e.g. table.groupby(['layer', 'head'], as_index=False)[{value!r}].mean(), "
                         "or select one model/step")
    grid = table.pivot(index="layer", columns="head", values=value)
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[f"H{h}" for h in grid.columns], y=[f"L{l}" for l in grid.index],
                               colorscale="Reds", colorbar=dict(title=value),
                               hovertemplate="layer %{y}, head %{x}<br>" + value + " %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title or value, xaxis_title="head", yaxis=dict(title="layer", autorange="reversed"))
    return fig
