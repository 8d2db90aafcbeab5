"""Jupyter widgets: thin live wrappers around the pure figures of `workbench.viz.attention` and
`workbench.viz.interpret`.

Widgets need a running kernel and are blank in static HTML exports, so a notebook shows a
static figure (e.g. `attention_explorer_figure`) beside each widget. Needs ipywidgets and
anywidget (the `lab` extra).
"""

from __future__ import annotations

import html
from copy import deepcopy

import ipywidgets as widgets
import plotly.graph_objects as go

from ..capture import AttentionResult, attention_for
from ..data import require_columns
from .attention import MAX_WIDTH, attention_heatmap


def keep_for_new_views(figure_widget: go.FigureWidget) -> None:
    """Make the widget's current figure what a NEW view of it shows (after a page reload, say).

    A FigureWidget sends edits made after it is displayed (`batch_update`, trace updates) to the
    views open at the time as one-off messages; the state a new view starts from
    (`_widget_data`, `_widget_layout`) is set only at creation and when the widget itself is
    displayed. Inside a VBox it never is, so a reloaded page showed the first, empty figure.
    This sets that state as plotly's own `FigureWidget._repr_mimebundle_` does. It sends the
    whole figure, so call it after a redraw, not on every step of a live plot.
    """
    figure_widget._widget_layout = deepcopy(figure_widget._layout_obj._props)
    figure_widget._widget_data = deepcopy(figure_widget._data)


def probe_text_box(text: str) -> widgets.Textarea:
    """A two-line text box for a probe text: a Textarea keeps the text's newlines, which a one-line
    Text box drops. Its value changes when the box loses focus (a newline is typed with Enter)."""
    return widgets.Textarea(value=text, description="text", rows=2, continuous_update=False,
                            layout=widgets.Layout(width="90%"))


def redraw(figure_widget: go.FigureWidget, fig: go.Figure) -> None:
    """Show `fig`'s (single) trace and layout in `figure_widget`, in place, and keep it for new views.

    The widget draws at `fig`'s own width, as the static figure beside it does, at most `MAX_WIDTH`
    (a widget wider than JupyterLab's output column, ~970 px, is clipped with no scroll bar); one
    without a width gets `MAX_WIDTH`. Not autosize: in JupyterLab an autosized widget drew at
    plotly's default 700 px, not its box's width (it measures its box before it is in the page).
    """
    trace = fig.data[0].to_plotly_json()
    trace.pop("type")
    layout = fig.layout.to_plotly_json()
    layout["width"] = min(MAX_WIDTH, layout.get("width") or MAX_WIDTH)
    layout["autosize"] = False
    with figure_widget.batch_update():
        figure_widget.data[0].update(trace, overwrite=True)
        figure_widget.layout.update(layout, overwrite=True)
    keep_for_new_views(figure_widget)


class AttentionExplorer(widgets.VBox):
    """Text box, model dropdown, layer and head sliders over a live attention heatmap.

    Changing the text or the model captures attention again (`capture.attention_for`);
    moving a slider only redraws. The slider ranges follow the chosen model's shape.

    `head_table` (optional): one row per (layer, head) of numbers to show in the title for the
    head on screen, e.g. its ablation effect and induction score (06_interpretability): a
    DataFrame when there is one model, else {"model name": DataFrame} for the models it describes.

    Attributes:
        text_box, model_dropdown, layer_slider, head_slider: the controls.
        figure_widget: the `go.FigureWidget` heatmap (one Heatmap trace).
        status: an HTML line showing errors such as characters the tokenizer does not know.
        result: the current `AttentionResult`, of the model named `result_model`.
    """

    def __init__(self, models: dict[str, tuple], text: str, head_table=None):
        if not models:
            raise ValueError("no models given; pass {'name': (model, tokenizer), ...}")
        self.models = models
        if head_table is not None and not isinstance(head_table, dict):
            if len(models) > 1:
                raise ValueError(f"head_table describes one model but {len(models)} are given; "
                                 f"pass head_table={{'{next(iter(models))}': table}} for the model it describes")
            head_table = {next(iter(models)): head_table}
        unknown = set(head_table or {}) - set(models)
        if unknown:
            raise ValueError(f"head_table names {sorted(unknown)}, not among the models {list(models)}")
        for name, table in (head_table or {}).items():
            require_columns(table, ["layer", "head"], "pass viz.head_summary's table", name=f"head_table of {name!r}")
        self.head_tables = {name: table.set_index(["layer", "head"]) for name, table in (head_table or {}).items()}
        self._capturing = False
        self.result: AttentionResult | None = None
        self.result_model: str | None = None
        self.text_box = probe_text_box(text)
        self.model_dropdown = widgets.Dropdown(options=list(models), description="model")
        self.layer_slider = widgets.IntSlider(value=0, min=0, max=0, description="layer")
        self.head_slider = widgets.IntSlider(value=0, min=0, max=0, description="head")
        self.status = widgets.HTML()
        self.figure_widget = go.FigureWidget(go.Figure(go.Heatmap()))
        self._capture()
        self.text_box.observe(self._capture, names="value")
        self.model_dropdown.observe(self._capture, names="value")
        self.layer_slider.observe(self._draw, names="value")
        self.head_slider.observe(self._draw, names="value")
        controls = widgets.HBox([self.model_dropdown, self.layer_slider, self.head_slider])
        super().__init__([self.text_box, controls, self.status, self.figure_widget])

    def _capture(self, change=None) -> None:
        name = self.model_dropdown.value
        try:
            self.result = attention_for(*self.models[name], self.text_box.value)
        except ValueError as e:  # e.g. a character outside a char tokenizer's vocabulary
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        self.result_model = name  # the figure stays on this model's result until a capture succeeds
        self.status.value = ""
        # Narrowing a slider clamps its value, and each clamp would redraw with the other slider
        # still out of the new model's range: no redraws until both ranges are set, then one.
        self._capturing = True
        try:
            self.layer_slider.max = self.result.n_layer - 1
            self.head_slider.max = self.result.n_head - 1
            for slider in (self.layer_slider, self.head_slider):
                slider.disabled = slider.min == slider.max  # one layer (or head): nothing to pick
        finally:
            self._capturing = False
        self._draw()

    def _draw(self, change=None) -> None:
        if self.result is None or self._capturing:
            return
        l, h = self.layer_slider.value, self.head_slider.value
        title = f"{self.result.model_name}: layer {l}, head {h}"
        table = self.head_tables.get(self.result_model)
        if table is not None and (l, h) in table.index:
            numbers = table.loc[(l, h)]
            title += " · " + ", ".join(f"{k} {v:.3f}" for k, v in numbers.items() if isinstance(v, (int, float)))
        fig = attention_heatmap(self.result.head(l, h), self.result.tokens, title=title)
        redraw(self.figure_widget, fig)


def attention_explorer(models: dict[str, tuple], text: str, head_table=None) -> AttentionExplorer:
    """An `AttentionExplorer` widget over `models` ({"name": (model, tokenizer)}), starting on `text`."""
    return AttentionExplorer(models, text, head_table)


class LogitLensExplorer(widgets.VBox):
    """A text box over a live logit-lens figure (`viz.interpret.logit_lens_figure`) of one GPT.

    Attributes:
        text_box, status (errors such as characters the tokenizer does not know),
        figure_widget (one Heatmap trace), top and prob (the current tables).
    """

    def __init__(self, model, tokenizer, text: str):
        self.model, self.tokenizer = model, tokenizer
        self.top = self.prob = None
        self.text_box = probe_text_box(text)
        self.status = widgets.HTML()
        self.figure_widget = go.FigureWidget(go.Figure(go.Heatmap()))
        self._draw()
        self.text_box.observe(self._draw, names="value")
        super().__init__([self.text_box, self.status, self.figure_widget])

    def _draw(self, change=None) -> None:
        from ..interpret import logit_lens_top_tokens
        from .interpret import logit_lens_figure

        try:
            self.top, self.prob = logit_lens_top_tokens(self.model, self.tokenizer, self.text_box.value)
        except ValueError as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        self.status.value = ""
        fig = logit_lens_figure(self.top, self.prob)
        redraw(self.figure_widget, fig)


class TranslationExplorer(widgets.VBox):
    """Type a source sentence, see the translation and its cross-attention redraw live.

    Changing the text or the beam width translates again and captures the cross-attention of the
    translation (`translator.cross_attention`); moving the layer or head slider only redraws.
    Head -1 shows the mean over the layer's heads.

    Attributes:
        text_box, beam_slider, layer_slider, head_slider: the controls.
        output: an HTML line with the translation (or the error, e.g. an empty text).
        figure_widget: the `go.FigureWidget` heatmap.
        result: the current `translator.CrossAttention`.
    """

    def __init__(self, translator, text: str):
        from ..translator import cross_attention

        self.translator, self._capture_fn = translator, cross_attention
        self.result = None
        cfg = translator.model.config
        # One line, unlike the GPT explorers' `probe_text_box`: a source date has no line break, and
        # Enter (in a Textarea, a newline the tokenizer never saw) translates here, as leaving the box does.
        self.text_box = widgets.Text(value=text, description="source", continuous_update=False,
                                     layout=widgets.Layout(width="90%"))
        self.beam_slider = widgets.IntSlider(value=1, min=1, max=8, description="beam")
        self.layer_slider = widgets.IntSlider(value=cfg.n_dec_layer - 1, min=0, max=cfg.n_dec_layer - 1,
                                              description="layer", disabled=cfg.n_dec_layer == 1)
        # the whole description: the default width cut it to "head (-1: ..."
        self.head_slider = widgets.IntSlider(value=-1, min=-1, max=cfg.n_head - 1, description="head (-1: mean)",
                                             style={"description_width": "initial"})
        self.output = widgets.HTML()
        self.figure_widget = go.FigureWidget(go.Figure(go.Heatmap()))
        self._capture()
        self.text_box.observe(self._capture, names="value")
        self.beam_slider.observe(self._capture, names="value")
        self.layer_slider.observe(self._draw, names="value")
        self.head_slider.observe(self._draw, names="value")
        controls = widgets.HBox([self.beam_slider, self.layer_slider, self.head_slider])
        super().__init__([self.text_box, controls, self.output, self.figure_widget])

    def _capture(self, change=None) -> None:
        try:
            self.result = self._capture_fn(self.translator, self.text_box.value, beam=self.beam_slider.value)
        except ValueError as e:  # e.g. an empty source
            self.output.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        unknown = self.translator.tokenizer.unknown(self.text_box.value)
        note = f" (never seen, read as &lt;unk&gt;: {html.escape(' '.join(unknown))})" if unknown else ""
        self.output.value = f"translation: <b>{html.escape(self.result.translation)}</b>{note}"
        self._draw()

    def _draw(self, change=None) -> None:
        from .seq2seq import cross_attention_heatmap

        if self.result is None:
            return
        l, h = self.layer_slider.value, self.head_slider.value
        w = self.result.weights[l].mean(0) if h < 0 else self.result.weights[l, h]
        fig = cross_attention_heatmap(w, self.result.source_tokens, self.result.target_tokens,
                                      title=f"cross-attention, layer {l}, {'mean of heads' if h < 0 else f'head {h}'}")
        redraw(self.figure_widget, fig)


def logit_lens_explorer(model, tokenizer, text: str) -> LogitLensExplorer:
    """A `LogitLensExplorer` widget of a GPT, starting on `text`."""
    return LogitLensExplorer(model, tokenizer, text)


def translation_explorer(translator, text: str) -> TranslationExplorer:
    """A `TranslationExplorer` widget over a `translator.Translator`, starting on `text`."""
    return TranslationExplorer(translator, text)
