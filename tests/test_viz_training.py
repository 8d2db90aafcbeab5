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
