"""Figures of `workbench.interpret`: head ablation, induction heads over training, the logit lens.

Pure functions from DataFrames to Plotly figures. Where a figure offers a choice (zero or mean
ablation, a pattern statistic, a training step) it does so with Plotly's own `updatemenus` or
`sliders`, which work in a static HTML export with no kernel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..data import require_columns
from ..interpret import head_name
from .attention import MAX_WIDTH, visible_token
from .evaluation import LABELLED_POINTS, label_room
from .training import LEGEND_ABOVE, OWN_TICKS


def _grid(table: pd.DataFrame, value: str) -> pd.DataFrame:
    return table.pivot(index="layer", columns="head", values=value)


def _toggle(labels: Sequence[str], method: str = "update", extra: Sequence[dict] | None = None) -> dict:
    """A dropdown whose button k shows trace k only."""
    n = len(labels)
    buttons = [dict(label=lab, method=method,
                    args=[{"visible": [j == k for j in range(n)]}] + ([extra[k]] if extra else []))
               for k, lab in enumerate(labels)]
    return dict(buttons=buttons, x=1.0, xanchor="right", y=1.02, yanchor="bottom")  # top right, clear of the title


def ablation_figure(table: pd.DataFrame, kinds: Sequence[str] = ("mean", "zero"),
                    title: str | None = "loss rise when a head is ablated (nats/token)") -> go.Figure:
    """A layer x head heatmap of the loss rise per ablated head, a dropdown picking the ablation.

    Args:
        table: `interpret.head_ablation`'s rows, with a `{kind}_delta` column per kind.
        kinds: the ablations to offer, the first shown.
    Returns:
        a Figure with one Heatmap per kind (only the first visible) and updatemenus[0] switching them.
    """
    require_columns(table, ["layer", "head", *[f"{k}_delta" for k in kinds]], "pass interpret.head_ablation's table")
    traces = []
    for k, kind in enumerate(kinds):
        grid = _grid(table, f"{kind}_delta")
        limit = float(np.nanmax(np.abs(grid.to_numpy()))) or 1.0
        traces.append(go.Heatmap(z=grid.to_numpy(), x=[f"H{h}" for h in grid.columns], y=[f"L{l}" for l in grid.index],
                                 colorscale="RdBu_r", zmid=0, zmin=-limit, zmax=limit, visible=k == 0,
                                 name=f"{kind} ablation", colorbar=dict(title="Δ loss"),
                                 # tiny effects with an SI prefix, as the colour bar: "12.3µ", not "0.000"
                                 texttemplate="%{z:.3f}" if limit >= 0.01 else "%{z:.3s}",
                                 hovertemplate=f"{kind} ablation<br>layer %{{y}}, head %{{x}}<br>Δ loss %{{z:.4f}}"
                                               "<extra></extra>"))
    fig = go.Figure(traces)
    fig.update_layout(title=title, updatemenus=[_toggle([f"{k} ablation" for k in kinds])], margin=dict(t=110),
                      xaxis_title="head", yaxis=dict(title="layer", autorange="reversed"))
    return fig


def importance_vs_pattern_figure(table: pd.DataFrame, effect: str = "mean_delta",
                                 statistics: Sequence[str] = ("prev_token", "first_token", "entropy", "self_token"),
                                 title: str | None = None) -> go.Figure:
    """Each head as a point: a pattern statistic across, its ablation effect up; a dropdown picks the statistic.

    Where "looks important" (a sharp previous-token pattern, say) and "is important" (a large
    loss rise) agree, the points climb to the right.

    Args:
        table: one row per head with `effect` and the statistics (`head_ablation` merged with `head_summary`).
    Returns:
        a Figure with one Scatter per statistic (only the first visible), points labelled "L{l}H{h}".
    """
    require_columns(table, ["layer", "head", effect, *statistics],
                    "merge head_ablation with viz.head_summary on layer, head")
    names = [head_name(l, h) for l, h in zip(table["layer"], table["head"])]
    traces = [go.Scatter(x=table[s], y=table[effect], mode="markers+text", text=names, textposition="top center",
                         visible=k == 0, name=s, **LABELLED_POINTS,
                         hovertemplate=f"%{{text}}<br>{s} %{{x:.3f}}<br>{effect} %{{y:.4f}}<extra></extra>")
              for k, s in enumerate(statistics)]
    fig = go.Figure(traces)
    extra = [{"xaxis.title.text": s} for s in statistics]
    fig.update_layout(title=title or f"{effect} against the attention pattern", margin=dict(t=110),
                      updatemenus=[_toggle(list(statistics), extra=extra)],
                      xaxis_title=statistics[0],
                      yaxis=dict(title=f"{effect} (nats/token)", range=label_room(table[effect])))  # clear of the menu
    return fig


def induction_over_steps_figure(scores: pd.DataFrame, title: str | None = "induction score per head") -> go.Figure:
    """A layer x head heatmap of induction scores with a slider over training steps.

    Args:
        scores: `interpret.induction_over_checkpoints`'s per-head table (step, layer, head, induction_score).
    Returns:
        a Figure with one Heatmap per step (only the first visible; colours fixed to 0..1) and
        layout.sliders[0] labelled by step.
    """
    require_columns(scores, ["step", "layer", "head", "induction_score"], "pass induction_over_checkpoints' scores")
    steps = sorted(scores["step"].unique())
    traces = []
    for k, step in enumerate(steps):
        grid = _grid(scores[scores["step"] == step], "induction_score")
        traces.append(go.Heatmap(z=grid.to_numpy(), x=[f"H{h}" for h in grid.columns], y=[f"L{l}" for l in grid.index],
                                 zmin=0, zmax=1, colorscale="Reds", visible=k == 0, name=f"step {step}",
                                 texttemplate="%{z:.2f}", colorbar=dict(title="score"),
                                 hovertemplate="layer %{y}, head %{x}<br>induction score %{z:.3f}<extra></extra>"))
    slider_steps = [dict(label=str(s), method="restyle", args=[{"visible": [j == k for j in range(len(steps))]}])
                    for k, s in enumerate(steps)]
    fig = go.Figure(traces)
    fig.update_layout(title=title, xaxis_title="head", yaxis=dict(title="layer", autorange="reversed"),
                      sliders=[dict(active=0, steps=slider_steps, currentvalue=dict(prefix="step "), pad=dict(t=50))])
    return fig


def induction_timeline_figure(by_step: pd.DataFrame, title: str | None = "induction heads and in-context copying",
                              uniform: float | None = None) -> go.Figure:
    """The strongest induction score and the loss on each copy of repeated random tokens, by step.

    Args:
        by_step: `interpret.induction_over_checkpoints`'s per-step table.
        uniform: the score of uniform attention (`interpret.uniform_induction_score`), drawn as a
            dashed line on the score axis; None draws none.
    Returns:
        a Figure of three Scatter traces: max_induction_score (left axis), first_copy_loss and
        second_copy_loss (right axis, nats/token); a fourth, "uniform attention", when given.
    """
    require_columns(by_step, ["step", "max_induction_score", "first_copy_loss", "second_copy_loss"],
             "pass induction_over_checkpoints' per-step table")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=by_step["step"], y=by_step["max_induction_score"], name="max induction score",
                             mode="lines+markers"), secondary_y=False)
    for col, dash in (("first_copy_loss", "dot"), ("second_copy_loss", "solid")):
        fig.add_trace(go.Scatter(x=by_step["step"], y=by_step[col], name=col.replace("_", " "), mode="lines+markers",
                                 line=dict(dash=dash)), secondary_y=True)
    if uniform is not None:
        steps = [by_step["step"].min(), by_step["step"].max()]
        fig.add_trace(go.Scatter(x=steps, y=[uniform, uniform], name="uniform attention", mode="lines",
                                 line=dict(dash="dash", color="grey")), secondary_y=False)
    fig.update_yaxes(title_text="induction score", range=[0, 1], secondary_y=False)
    fig.update_yaxes(title_text="loss (nats/token)", showgrid=False, secondary_y=True, **OWN_TICKS)
    fig.update_layout(title=title, xaxis_title="training step", legend=LEGEND_ABOVE)  # clear of the right axis' title
    return fig


def _position_label(column) -> str:
    """A logit-lens column "i:token" as `viz.token_labels` writes it (a space as "·", a newline as "↵")."""
    i, sep, token = str(column).partition(":")
    return f"{i}:{visible_token(token)}" if sep else i


def logit_lens_figure(top: pd.DataFrame, prob: pd.DataFrame,
                      title: str | None = "logit lens: top prediction of each layer") -> go.Figure:
    """The logit lens of a probe text: layers down, positions across, each cell the top token.

    Args:
        top, prob: `interpret.logit_lens_top_tokens`'s tables (index: layer labels; columns:
            unique "i:token" position labels).
    Returns:
        a Figure with one Heatmap: z = probability of the top token, text = the token; tokens
        (on x and in the cells) are shown as `viz.token_labels` shows them.
    """
    if list(top.index) != list(prob.index) or list(top.columns) != list(prob.columns):
        raise ValueError("top and prob must come from the same logit_lens_top_tokens call")
    text = np.array([[visible_token(tok) for tok in row] for row in top.to_numpy()], dtype=str).reshape(top.shape)
    x = [_position_label(c) for c in prob.columns]
    fig = go.Figure(go.Heatmap(z=prob.to_numpy(), x=x, y=list(prob.index), text=text,
                               texttemplate="%{text}", zmin=0, zmax=1, colorscale="Blues", colorbar=dict(title="p(top)"),
                               hovertemplate="%{y}, after %{x}<br>predicts %{text!r} p=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, width=min(MAX_WIDTH, 200 + 60 * top.shape[1]), height=200 + 40 * top.shape[0],
                      xaxis=dict(title="position: input token (the prediction is for the next one)", type="category",
                                 tickangle=-60),
                      yaxis=dict(title="residual stream after", type="category", autorange="reversed"))
    return fig


def logit_lens_metrics_figure(metrics: pd.DataFrame, title: str | None = "logit lens on held-out text") -> go.Figure:
    """Next-token accuracy (left axis) and loss (right axis) of the logit lens at every depth.

    Args:
        metrics: `interpret.logit_lens_metrics`'s table (layer, loss, accuracy).
    """
    require_columns(metrics, ["layer", "loss", "accuracy"], "pass interpret.logit_lens_metrics' table")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=metrics["layer"], y=metrics["accuracy"], name="accuracy"), secondary_y=False)
    fig.add_trace(go.Scatter(x=metrics["layer"], y=metrics["loss"], name="loss", mode="lines+markers"),
                  secondary_y=True)
    fig.update_yaxes(title_text="next-token accuracy", range=[0, 1], secondary_y=False)
    fig.update_yaxes(title_text="loss (nats/token)", showgrid=False, secondary_y=True, **OWN_TICKS)
    fig.update_layout(title=title, xaxis=dict(title="residual stream after", type="category"), legend=LEGEND_ABOVE)
    return fig
