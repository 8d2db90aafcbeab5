"""Training figures: loss curves (static and live) and model-size scaling.

`loss_curves` and `scaling_figure` are pure functions of a DataFrame. `LiveLossPlot` is a
`Trainer` callback that keeps the records it is given and, inside a Jupyter kernel, redraws
the same `loss_curves` figure in place while training runs. Widgets are not kept in static
HTML exports, so a notebook shows `live.figure()` (a plain figure) after training as well; the
widget's text form, which an executed .ipynb stores beside it, is one line (`LIVE_FIGURE_NOTE`).
"""

from __future__ import annotations

import time
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go

from ..data import require_columns


LOSS_PER_TOKEN = "loss (nats/token)"  # a language model's cross-entropy, averaged over predicted tokens
LIVE_FIGURE_NOTE = "(live loss figure: it updates while training runs in JupyterLab)"
# Axis titles, with units, of the columns the workbench logs and the evaluation tables hold; any other
# column is titled by its name.
AXIS_TITLES = {
    "val_loss": "validation loss (nats/token)",
    "val_accuracy": "validation accuracy (fraction correct)",
    "val_macro_f1": "validation macro-F1",  # a fraction, 0 to 1
    "val_exact_match": "validation exact match (fraction)",
    "lr": "learning rate",
    "params": "parameters",
    "non_embedding_params": "non-embedding parameters",
    "size_mb": "size on disk (MB)",
    "zipped_mb": "zipped size (MB)",
    "tokens_per_s": "tokens per second",
    "perplexity": "perplexity",
    "delta_perplexity": "perplexity change",
    "macro_f1": "macro-F1",
    "delta_macro_f1": "macro-F1 change",
    "accuracy": "accuracy",
    "bits_per_char": "bits per character",
    "bits_per_byte": "bits per byte",
    "bits_per_token": "bits per token",
    "cross_entropy": "cross-entropy (nats per token)",
}


# Metrics that are fractions, 0 to 1: a second axis holding only these is fixed to 0..1, so a flat
# curve does not autorange into negative ticks.
FRACTION_SUFFIXES = ("f1", "accuracy", "exact_match")
# A legend in a row above the plot: clear of a right-hand axis' title, which a legend at the right runs into.
LEGEND_ABOVE = dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom")
# A second (overlaying) axis's own round ticks: by default plotly.js puts them at the first axis's
# grid lines, which reads 0.956, 0.806, ... (or -0.428 on a flat curve).
OWN_TICKS = dict(tickmode="auto")


def axis_title(column: str) -> str:
    """A readable axis title, with units, for a column: `AXIS_TITLES`' entry, else the name.

    Args:
        column: a column name such as "val_loss", "val_macro_f1" or "zipped_mb".
    Returns:
        e.g. "validation loss (nats/token)"; an unknown column comes back unchanged.
    """
    return AXIS_TITLES.get(column, column)


def loss_curves(history_df: pd.DataFrame, extra: Sequence[str] = (), title: str | None = "loss",
                log_y: bool = False, y_title: str = LOSS_PER_TOKEN) -> go.Figure:
    """Training loss per logged step and validation loss at each evaluation, against step.

    Args:
        history_df: `History.df` of a Trainer: a `step` column, `loss` on training records and
            `val_loss` on evaluation records (each NaN on the other kind of row). Either loss
            column may be missing; an empty frame gives empty curves.
        extra: more columns to draw on a second y axis (e.g. "lr", "val_accuracy").
        title: figure title.
        log_y: logarithmic loss axis.
        y_title: the loss axis' title: what the loss averages over, e.g. "loss (nats/passage)" for a
            classifier's cross-entropy over classes.
    Returns:
        a Figure whose traces are "train loss", "val loss", then one per `extra` column, in that
        order, named `axis_title(column)`. With `extra`, the legend is a row above the plot, and
        the second axis is 0..1 when every extra column is a fraction (`FRACTION_SUFFIXES`).
    """
    df = history_df
    if "step" not in df.columns:
        if len(df):
            raise ValueError("history has no 'step' column; pass History.df from a Trainer")
        df = df.assign(step=pd.Series(dtype=float))  # nothing logged yet
    require_columns(df, extra, "pass only logged columns as extra", name="the history")

    def points(col):
        if col not in df.columns:
            return [], []
        rows = df[df[col].notna()]
        return rows["step"].tolist(), rows[col].tolist()

    fig = go.Figure()
    x, y = points("loss")
    fig.add_trace(go.Scatter(x=x, y=y, name="train loss", mode="lines"))
    x, y = points("val_loss")
    fig.add_trace(go.Scatter(x=x, y=y, name="val loss", mode="lines+markers"))
    for col in extra:
        x, y = points(col)
        fig.add_trace(go.Scatter(x=x, y=y, name=axis_title(col), mode="lines+markers", yaxis="y2", line_dash="dot"))
    fig.update_layout(title=title, xaxis_title="step", hovermode="x unified",
                      yaxis=dict(title=y_title, type="log" if log_y else "linear"))
    if extra:
        fractions = all(c.endswith(FRACTION_SUFFIXES) for c in extra)
        if fractions:  # a point at 0 or 1 sits on the axis' edge: draw all of its marker
            fig.update_traces(cliponaxis=False, selector=dict(yaxis="y2"))
        fig.update_layout(yaxis2=dict(title=", ".join(axis_title(c) for c in extra), overlaying="y", side="right",
                                      showgrid=False, range=[0, 1] if fractions else None, **OWN_TICKS),
                          legend=LEGEND_ABOVE)
    return fig


def _in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel, where widgets can be displayed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class LiveLossPlot:
    """Trainer callback: a loss plot that updates while training runs in a notebook.

    Inside a Jupyter kernel with ipywidgets installed, the first record displays a
    `go.FigureWidget` and later records update its traces in place: at most every
    `min_interval` seconds for training steps, always for evaluations. Anywhere else it
    only collects the records. `figure()` gives the static figure of everything seen since
    the run started; a step count that goes back (the next run of a grid) starts afresh, and
    `on_run(name)` (which `compare.compare_modes` calls) starts afresh titled with the run's name.

    `title`, `extra` and `y_title` are `loss_curves`'.

    >>> live = LiveLossPlot()
    >>> Trainer(..., callbacks=[live]).fit()
    >>> live.figure()  # for the HTML report
    """

    # Every this many draws (and at each evaluation, which includes the last step) the widget's
    # figure is also kept for views opened later, e.g. after a page reload (`widgets.keep_for_new_views`).
    # That resends the whole figure, so not on every draw: traffic would grow with the square of the steps.
    KEEP_EVERY = 20

    def __init__(self, extra: Sequence[str] = (), min_interval: float = 1.0, title: str | None = "loss",
                 y_title: str = LOSS_PER_TOKEN):
        self.extra = tuple(extra)
        self.min_interval = min_interval
        self._draws = 0  # widget updates since it was displayed
        self._kept = 0  # len(self.records) when the figure was last kept for new views
        self.title, self.y_title = title, y_title
        self.run: str | None = None  # the grid's run being plotted, for the title
        self.records: list[dict] = []
        self.widget: go.FigureWidget | None = None
        self._last_draw = float("-inf")
        self._live = _in_kernel()
        # each trace's points, in `loss_curves`' trace order, kept as records arrive: a redraw then
        # costs only the widget update, not a new DataFrame and figure (~25 ms at 900 records)
        self._points: dict[str, tuple[list, list]] = {col: ([], []) for col in ("loss", "val_loss", *self.extra)}

    def on_run(self, name: str) -> None:
        """The next run of a grid ("lora, seed 1 (5 of 12)"): a fresh plot titled with its name."""
        self.run = name
        self._restart()
        if self.widget is not None:
            self.widget.layout.title = self._title()

    def on_step(self, trainer, record: dict) -> None:
        if self.records and record["step"] <= self.records[-1]["step"]:
            self._restart()  # a new run (e.g. the next fine-tuning mode) that on_run did not announce
        self._add(record)
        if time.monotonic() - self._last_draw >= self.min_interval:
            self._draw()

    def on_eval(self, trainer, record: dict) -> None:
        self._add(record)
        self._draw(keep=True)  # evaluations are few, and one follows the last step

    def on_checkpoint(self, trainer, path) -> None:
        if self._kept != len(self.records):  # e.g. a stop requested between evaluations
            self._draw(keep=True)

    def figure(self) -> go.Figure:
        """`loss_curves` of the records seen so far."""
        df = pd.DataFrame.from_records(self.records)
        for col in self.extra:  # not logged yet: an empty curve, so the widget's traces stay fixed
            if col not in df.columns:
                df[col] = float("nan")
        return loss_curves(df, extra=self.extra, title=self._title(), y_title=self.y_title)

    def _title(self) -> str | None:
        return f"{self.title or ''}: {self.run}".lstrip(": ") if self.run else self.title

    def _restart(self) -> None:
        self.records = []
        self._points = {col: ([], []) for col in self._points}

    def _add(self, record: dict) -> None:
        self.records.append(dict(record))
        for col, (xs, ys) in self._points.items():
            value = record.get(col)
            if value is not None and value == value:  # present and not NaN, as loss_curves draws
                xs.append(record["step"])
                ys.append(value)

    def _draw(self, keep: bool = False) -> None:
        if not self._live:
            return
        self._last_draw = time.monotonic()
        if self.widget is None:
            try:
                from IPython.display import display
                self.widget = _LiveFigureWidget(self.figure())  # needs ipywidgets + anywidget
            except (ImportError, ValueError):
                self._live = False  # no widget support: keep collecting, draw nothing
                return
            display(self.widget)  # (displaying a FigureWidget keeps its figure for new views)
            self._kept = len(self.records)
            return
        with self.widget.batch_update():
            for live_trace, (xs, ys) in zip(self.widget.data, self._points.values()):
                live_trace.x, live_trace.y = xs, ys
        self._draws += 1
        if keep or self._draws % self.KEEP_EVERY == 0:
            from .widgets import keep_for_new_views

            keep_for_new_views(self.widget)
            self._kept = len(self.records)


class _LiveFigureWidget(go.FigureWidget):
    """A FigureWidget whose text form is `LIVE_FIGURE_NOTE`. Displayed, a widget goes out as its view
    (which JupyterLab draws) and a text/plain fallback that an executed .ipynb keeps: for a plain
    FigureWidget that is the repr of its whole first state, `FigureWidget({'data': [...]})`."""

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython's text/plain of a displayed object
        printer.text(LIVE_FIGURE_NOTE)


def scaling_figure(df: pd.DataFrame, x: str | None = None, y: str = "val_loss", label: str | None = "label",
                   title: str | None = "validation loss vs model size", log_y: bool = False,
                   y_title: str | None = None) -> go.Figure:
    """Loss against model size on a log x axis, one line per label.

    Args:
        df: one row per trained model with columns `x` (parameter count) and `y`; optionally
            a `label` column (e.g. the positional encoding) that splits the rows into lines.
        x, y, label: column names; label is ignored when the column is absent. x defaults to
            `non_embedding_params` when the frame has it (as scaling-law studies count), else `params`.
        title: figure title.
        log_y: logarithmic y axis too (a power law is then a straight line).
        y_title: the y axis' title; None: `axis_title(y)`, e.g. "validation loss (nats/token)".
            With no label column the one trace is named by it too.
    Returns:
        a Figure with one lines+markers trace per label (rows sorted by x).
    """
    if x is None:
        x = "non_embedding_params" if "non_embedding_params" in df.columns else "params"
    require_columns(df, (x, y), "pass x= and y= naming columns of the frame", name="the frame")
    x_title, y_title = axis_title(x), y_title or axis_title(y)
    groups = df.groupby(label, sort=False) if label is not None and label in df.columns else [(y_title, df)]
    fig = go.Figure()
    for name, rows in groups:
        rows = rows.sort_values(x)
        fig.add_trace(go.Scatter(x=rows[x], y=rows[y], name=str(name), mode="lines+markers",
                                 hovertemplate=f"{x_title} %{{x:,}}<br>{y_title} %{{y:.4f}}<extra>{name}</extra>"))
    fig.update_layout(title=title, xaxis=dict(title=x_title, type="log"),
                      yaxis=dict(title=y_title, type="log" if log_y else "linear"))
    return fig


def validation_curves(histories: dict[str, pd.DataFrame], metric: str = "val_macro_f1",
                      title: str | None = None, y_title: str | None = None) -> go.Figure:
    """One validation curve per run (e.g. per fine-tuning mode) on shared axes.

    Args:
        histories: name -> a Trainer History DataFrame (rows with `metric` are evaluations).
        metric: the column to plot against `step`.
        title: figure title; None: "{y_title} during fine-tuning".
        y_title: the y axis' title; None: `axis_title(metric)`, e.g. "validation macro-F1".
            Name the unit for a classifier's "val_loss", e.g. "validation loss (nats/passage)".
    Returns:
        a Figure with one lines+markers trace per history, in the dict's order.
    """
    y_title = y_title or axis_title(metric)
    fig = go.Figure()
    for name, df in histories.items():
        if metric not in df.columns:
            raise ValueError(f"history {name!r} has no column {metric!r}; it has {list(df.columns)}")
        rows = df.dropna(subset=[metric])
        fig.add_trace(go.Scatter(x=rows["step"], y=rows[metric], name=str(name), mode="lines+markers",
                                 hovertemplate=f"{name}<br>step %{{x}}<br>{y_title} %{{y:.4f}}<extra></extra>"))
    fig.update_layout(title=title or f"{y_title} during fine-tuning", xaxis_title="step", yaxis_title=y_title)
    return fig
