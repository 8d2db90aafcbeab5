"""Figures (pure functions returning Plotly figures) and the widgets that wrap them.

Notebooks call `setup_notebook()` in their first cell. `attention_explorer` and
`logit_lens_explorer` (widgets) are imported on first use, so the figures work without
ipywidgets installed. The figures of `workbench.interpret` are in `viz.interpret`.
"""

from __future__ import annotations

from ..capture import head_summary  # a statistics table, not a figure; notebooks call it as viz.head_summary
from .attention import (attention_explorer_figure, attention_heatmap, attention_over_checkpoints, head_grid_figure,
                        matrix_figure, model_view, positional_encoding_figure, token_labels)
from .training import LiveLossPlot, loss_curves, scaling_figure, validation_curves
from .evaluation import (compression_figure, confusion_figure, per_class_figure, perplexity_by_document_figure,
                         reliability_diagram)
from .seq2seq import (cross_attention_explorer_figure, cross_attention_grid, cross_attention_heatmap,
                      cross_attention_over_checkpoints, decoding_speed_figure)

NOTEBOOK_RENDERER = "plotly_mimetype+notebook"

__all__ = ["setup_notebook", "token_labels", "attention_heatmap", "attention_explorer_figure", "model_view",
           "head_summary", "head_grid_figure", "attention_over_checkpoints", "positional_encoding_figure", "matrix_figure",
           "loss_curves", "LiveLossPlot", "scaling_figure", "validation_curves", "attention_explorer",
           "reliability_diagram", "confusion_figure", "per_class_figure", "compression_figure", "perplexity_by_document_figure",
           "logit_lens_explorer", "cross_attention_heatmap", "cross_attention_explorer_figure", "cross_attention_grid",
           "cross_attention_over_checkpoints", "decoding_speed_figure", "translation_explorer"]


def setup_notebook() -> None:
    """Make figures render inline AND survive export: call once in a notebook's first cell.

    In a kernel Plotly would emit only its mimetype, which JupyterLab draws but an executed
    notebook converted to HTML does not. "plotly_mimetype+notebook" also embeds plotly.js
    (from the installed package, no CDN) with the figures, so HTML reports show them
    offline. Setting it again is a no-op, so plotly.js is embedded only once.
    """
    import plotly.io as pio

    if pio.renderers.default != NOTEBOOK_RENDERER:
        pio.renderers.default = NOTEBOOK_RENDERER


def __getattr__(name: str):
    if name in ("attention_explorer", "logit_lens_explorer", "translation_explorer"):  # ipywidgets is only needed for the widgets
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
