"""workbench.viz.training: the loss axis names what the loss averages over, and the live figure's
text form (what an executed .ipynb keeps beside the widget) is one line, not the figure's dump."""

import pandas as pd

from workbench import viz
from workbench.viz import training as viz_training

HISTORY = pd.DataFrame([dict(step=1, loss=3.0), dict(step=2, val_loss=2.7)])


def test_loss_axis_is_nats_per_token_unless_told_otherwise():
    assert viz.loss_curves(HISTORY).layout.yaxis.title.text == "loss (nats/token)"
    assert viz.loss_curves(HISTORY, y_title="loss (nats/passage)").layout.yaxis.title.text == "loss (nats/passage)"
    live = viz.LiveLossPlot(y_title="loss (nats/passage)")
    live.on_step(None, dict(step=1, loss=1.1))
    assert live.figure().layout.yaxis.title.text == "loss (nats/passage)"


def test_the_live_widget_displays_as_a_view_and_a_one_line_note(monkeypatch):
    from IPython.core.formatters import DisplayFormatter  # what a kernel's display() uses, without starting a shell

    shown = []
    monkeypatch.setattr(viz_training, "_in_kernel", lambda: True)
    monkeypatch.setattr("IPython.display.display", shown.append)
    live = viz.LiveLossPlot(y_title="loss (nats/passage)")
    live.on_step(None, dict(step=1, loss=3.0))
    assert shown == [live.widget] and live.widget.layout.yaxis.title.text == "loss (nats/passage)"
    bundle, _ = DisplayFormatter().format(live.widget)
    assert bundle["text/plain"] == viz_training.LIVE_FIGURE_NOTE  # not "FigureWidget({'data': [...")
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == live.widget.model_id


def test_the_live_figure_of_a_grid_is_titled_with_each_run_and_starts_afresh(monkeypatch):
    monkeypatch.setattr(viz_training, "_in_kernel", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda widget: None)
    live = viz.LiveLossPlot()
    live.on_run("full, seed 0 (1 of 2)")
    live.on_step(None, dict(step=1, loss=3.0))
    live.on_step(None, dict(step=2, loss=2.5))
    assert live.widget.layout.title.text == live.figure().layout.title.text == "loss: full, seed 0 (1 of 2)"
    live.on_run("lora, seed 0 (2 of 2)")  # before its first step: the widget says what trains now
    assert live.widget.layout.title.text == "loss: lora, seed 0 (2 of 2)" and live.records == []
    live.on_step(None, dict(step=1, loss=2.9))
    assert list(live.figure().data[0].y) == [2.9]


def test_scaling_figure_titles_the_loss_axis_with_its_unit():
    sweep = pd.DataFrame(dict(params=[900, 500], non_embedding_params=[300, 100], val_loss=[1.5, 2.0]))
    fig = viz.scaling_figure(sweep)
    assert fig.layout.yaxis.title.text == "validation loss (nats/token)"
    assert fig.data[0].name == "validation loss (nats/token)"  # no label column: the one trace
    assert "validation loss (nats/token)" in fig.data[0].hovertemplate
    assert viz.scaling_figure(sweep, y_title="loss").layout.yaxis.title.text == "loss"


def test_validation_curves_title_the_metric_readably():
    history = pd.DataFrame(dict(step=[2, 4], val_macro_f1=[0.4, 0.5], val_loss=[1.0, 0.9], other=[1, 2]))
    fig = viz.validation_curves({"full": history})
    assert fig.layout.yaxis.title.text == "validation macro-F1"
    assert fig.layout.title.text == "validation macro-F1 during fine-tuning"
    loss = viz.validation_curves({"full": history}, metric="val_loss", y_title="validation loss (nats/passage)")
    assert loss.layout.yaxis.title.text == "validation loss (nats/passage)"
    assert viz.validation_curves({"full": history}, metric="other").layout.yaxis.title.text == "other"  # unknown: its name


def test_loss_curves_second_axis_titles_known_columns():
    history = HISTORY.assign(val_accuracy=[None, 0.5])
    assert viz.loss_curves(history, extra=["val_accuracy"]).layout.yaxis2.title.text == \
        "validation accuracy (fraction correct)"


def test_a_second_axis_of_fractions_is_zero_to_one_and_named_readably():
    history = pd.DataFrame([dict(step=1, loss=3.0), dict(step=2, val_loss=2.7, val_exact_match=0.0),
                            dict(step=4, val_loss=2.5, val_exact_match=0.0)])  # flat: autorange went negative
    fig = viz.loss_curves(history, extra=["val_exact_match"])
    assert fig.data[2].name == fig.layout.yaxis2.title.text == "validation exact match (fraction)"
    assert tuple(fig.layout.yaxis2.range) == (0, 1)
    assert fig.layout.yaxis2.tickmode == "auto"  # its own 0, 0.2, ...; not at the loss axis' grid (0.956, 0.806, ...)
    f1 = viz.loss_curves(history.rename(columns={"val_exact_match": "val_macro_f1"}), extra=["val_macro_f1"])
    assert tuple(f1.layout.yaxis2.range) == (0, 1) and f1.data[2].name == "validation macro-F1"
    lr = viz.loss_curves(history.rename(columns={"val_exact_match": "lr"}), extra=["lr"])
    assert lr.layout.yaxis2.range is None and lr.data[2].name == "learning rate"  # not a fraction: autorange
    live = viz.LiveLossPlot(extra=("val_exact_match",))
    live.on_eval(None, dict(step=2, val_loss=2.7, val_exact_match=0.5))
    assert live.figure().data[2].name == "validation exact match (fraction)"


def test_with_a_second_axis_the_legend_is_a_row_above_the_plot_clear_of_its_title():
    """At the right (x=1.08) the legend ran under the right axis' rotated title."""
    legend = viz.loss_curves(HISTORY.assign(val_accuracy=[None, 0.5]), extra=["val_accuracy"]).layout.legend
    assert legend.orientation == "h" and legend.y >= 1 and legend.yanchor == "bottom"
