"""Figures, checked on their data: labels stay unique, heatmaps show the input, the
kernel-free controls (dropdowns, sliders) select the right data, head statistics are right
on hand-made patterns, loss curves plot what the Trainer logged, and the widget redraws."""

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch
from helpers import causal_uniform, prev_token_head

from workbench import viz
from workbench.capture import head_summary
from workbench.config import ModelConfig, TrainConfig
from workbench.data import get_batch
from workbench.model import GPT, sinusoidal_encoding
from workbench.tokenizer import CharTokenizer
from workbench.train import Trainer
from workbench.viz import interpret as vi
from workbench.viz import training as viz_training

TOKENS = ["the", "cat", "the"]


def random_attention(L, H, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(L, H, T, T, generator=g).softmax(-1)


# ----------------------------------------------------------------- attention figures
def test_token_labels_keep_repeated_tokens_apart():
    assert viz.token_labels(TOKENS) == ["0:the", "1:cat", "2:the"]


def test_token_labels_show_spaces_and_line_breaks():
    """A space token would label its row "3:" (blank); a BPE piece " the" reads "·the" as 01's table writes it."""
    labels = viz.token_labels([" the", " ", "\n", "\t", "  x", " "])
    assert labels == ["0:·the", "1:·", "2:↵", "3:⇥", "4:··x", "5:·"]
    assert len(set(labels)) == 6


# JupyterLab's output column is ~970 px wide (file browser open): a wider figure is cut or needs scrolling,
# and a wider widget is clipped with no way to scroll.
COLUMN = 1000


def test_matrix_figure_wraps_many_panels_onto_rows_that_fit_the_notebook():
    names = ["head 0", "head 1", "concatenated heads", "W_O", "output"]
    fig = viz.matrix_figure({n: torch.randn(6, 6 + k) for k, n in enumerate(names)}, row_labels=list("abcdef"))
    assert fig.layout.width <= COLUMN
    assert [a.text for a in fig.layout.annotations] == names
    rows = [tuple(fig.layout[f"yaxis{k + 1 if k else ''}"].domain) for k in range(5)]
    assert rows[0] == rows[1] == rows[2] != rows[3] == rows[4]  # 3 + 2
    assert [t.name for t in fig.data] == names and [t.xaxis for t in fig.data] == ["x", "x2", "x3", "x4", "x5"]
    assert np.array(fig.data[4].z).shape == (6, 10)
    for t, (lo, hi) in zip(fig.data, rows):  # each colour bar beside its own panel's row
        assert lo < t.colorbar.y < hi and t.colorbar.len <= hi - lo
    assert viz.matrix_figure({"a": torch.ones(2, 2)}).layout.height == 400  # one row as before


def test_attention_figures_fit_the_notebook_column_for_large_inputs():
    A, tokens = random_attention(6, 12, 40), [f"t{i}" for i in range(40)]
    figures = {"model_view": viz.model_view(A, tokens), "heatmap": viz.attention_heatmap(A[0, 0], tokens),
               "explorer": viz.attention_explorer_figure(A, tokens),
               "checkpoints": viz.attention_over_checkpoints([(0, A[0, 0]), (1, A[0, 1])], tokens)}
    for name, fig in figures.items():
        assert fig.layout.width <= COLUMN, (name, fig.layout.width)
    grid = figures["model_view"]
    widths = {round(grid.layout[f"xaxis{k + 1 if k else ''}"].domain[1] - grid.layout[f"xaxis{k + 1 if k else ''}"].domain[0], 6)
              for k in range(12)}
    assert len(widths) == 1 and len(grid.data) == 72  # every head, in equal panels
    columns = [f"{i}:t{i}" for i in range(40)]
    lens = vi.logit_lens_figure(pd.DataFrame([["x"] * 40] * 3, columns=columns),
                                pd.DataFrame(np.full((3, 40), 0.5), columns=columns))
    assert lens.layout.width <= COLUMN


def test_model_view_of_a_small_model_is_wide_enough_for_its_subtitle():
    assert viz.model_view(random_attention(1, 2, 4), list("abca")).layout.width >= 600


def test_attention_heatmap_shows_the_weights_with_unique_labels():
    w = causal_uniform(3)
    fig = viz.attention_heatmap(w, TOKENS, title="t")
    (trace,) = fig.data
    assert np.allclose(np.array(trace.z), w.numpy())
    assert len(set(trace.y)) == 3 and list(trace.x) == ["0:the", "1:cat", "2:the"]
    assert all(word in trace.hovertemplate for word in ("query", "key", "weight"))
    assert (trace.zmin, trace.zmax) == (0, 1)
    assert fig.layout.yaxis.autorange == "reversed"  # first query at the top
    with pytest.raises(ValueError, match="tokens"):
        viz.attention_heatmap(w, ["a", "b"])


def test_attention_views_name_the_fix_when_tokens_are_none():
    A = random_attention(1, 2, 3)
    for draw in (lambda: viz.attention_heatmap(A[0, 0], None), lambda: viz.model_view(A, None),
                 lambda: viz.attention_explorer_figure(A, None),
                 lambda: viz.attention_over_checkpoints([(0, A[0, 0])], None)):
        with pytest.raises(TypeError, match=r"^tokens is None: pass the list of token strings, e\.g\. tokenizer\.tokens\(ids\)"):
            draw()


def test_self_attention_views_refuse_weights_that_are_not_square():
    """A (T, S) matrix is cross-attention: drawn with token labels for T×T it would mislabel an axis."""
    from workbench.capture import head_summary

    message = r"a query for every key, got shape \(.*3, 5\).*viz.cross_attention_heatmap"
    for draw in (lambda: viz.attention_heatmap(torch.rand(3, 5), TOKENS),
                 lambda: viz.attention_explorer_figure(torch.rand(1, 1, 3, 5), TOKENS),
                 lambda: viz.model_view(torch.rand(1, 1, 3, 5), TOKENS),
                 lambda: viz.attention_over_checkpoints([(0, torch.rand(3, 5))], TOKENS)):
        with pytest.raises(ValueError, match=message):
            draw()
    with pytest.raises(ValueError, match=r"\(n_layer, n_head, T, T\).*got shape \(1, 1, 5, 3\)"):
        head_summary(torch.ones(1, 1, 5, 3) / 3)  # it had failed with an IndexError
    with pytest.raises(ValueError, match=r"frames must be \(step, weights\) pairs"):
        viz.attention_over_checkpoints([causal_uniform(3), causal_uniform(3)], TOKENS)


def visible_block(fig):
    """The part of the explorer's z that the current axis ranges show."""
    (y_hi, y_lo), (x_lo, x_hi) = fig.layout.yaxis.range, fig.layout.xaxis.range
    z = np.array(fig.data[0].z)
    return z[math.ceil(y_lo):math.floor(y_hi) + 1, math.ceil(x_lo):math.floor(x_hi) + 1]


def test_explorer_dropdowns_pick_every_layer_and_head():
    A = random_attention(2, 3, 4)
    fig = viz.attention_explorer_figure(A, ["a", "b", "a", "c"], title="explore")
    layer_menu, head_menu = fig.layout.updatemenus
    assert [b.label for b in layer_menu.buttons] == ["layer 0", "layer 1"]
    assert [b.label for b in head_menu.buttons] == ["head 0", "head 1", "head 2"]
    assert np.allclose(visible_block(fig), A[0, 0].numpy())  # starts on layer 0, head 0
    for l, lb in enumerate(layer_menu.buttons):
        for h, hb in enumerate(head_menu.buttons):
            assert lb.method == hb.method == "relayout"
            fig.update_layout(lb.args[0])
            fig.update_layout(hb.args[0])
            assert np.allclose(visible_block(fig), A[l, h].numpy()), (l, h)
    # the ticks show tokens, the categories stay unique across layers
    assert list(fig.layout.yaxis.ticktext[:4]) == ["0:a", "1:b", "2:a", "3:c"]
    assert len(set(fig.data[0].y)) == 8 and len(set(fig.data[0].x)) == 12


def test_model_view_is_a_grid_of_every_head():
    A = random_attention(2, 3, 4)
    fig = viz.model_view(A, list("abca"))
    heatmaps = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heatmaps) == 6 and all(t.coloraxis == "coloraxis" for t in heatmaps)
    assert np.allclose(np.array(heatmaps[4].z), A[1, 1].numpy())  # layer-major order
    assert [a.text for a in fig.layout.annotations][:4] == ["L0 H0", "L0 H1", "L0 H2", "L1 H0"]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0, 1)
    assert fig.layout.xaxis.showticklabels  # small grid: labels
    big = viz.model_view(random_attention(6, 12, 5), list("abcde"))
    assert len(big.data) == 72 and big.layout.xaxis.showticklabels is False


def test_head_summary_stays_importable_from_viz_for_the_notebooks():
    assert viz.head_summary is head_summary


def test_checkpoint_slider_has_one_step_per_checkpoint():
    frames = [(0, causal_uniform(3)), (100, prev_token_head(3)), (250, torch.eye(3))]
    fig = viz.attention_over_checkpoints(frames, TOKENS)
    (slider,) = fig.layout.sliders
    assert [s.label for s in slider.steps] == ["0", "100", "250"]
    assert [t.visible for t in fig.data] == [True, False, False]
    for k, step in enumerate(slider.steps):
        assert step.args[0]["visible"] == [j == k for j in range(3)]
        assert np.allclose(np.array(fig.data[k].z), frames[k][1].numpy())
    with pytest.raises(ValueError, match="shape"):
        viz.attention_over_checkpoints([(0, torch.eye(3)), (1, torch.eye(4))], TOKENS)


def test_checkpoint_slider_takes_labels_instead_of_steps():
    frames = [(0, causal_uniform(3)), (1, prev_token_head(3))]
    fig = viz.attention_over_checkpoints(frames, TOKENS, labels=["pretrained", "fine-tuned"])
    (slider,) = fig.layout.sliders
    assert [s.label for s in slider.steps] == ["pretrained", "fine-tuned"]
    assert "step" not in (slider.currentvalue.prefix or "")
    assert [t.name for t in fig.data] == ["pretrained", "fine-tuned"]
    with pytest.raises(ValueError, match="one label per checkpoint"):
        viz.attention_over_checkpoints(frames, TOKENS, labels=["only one"])


def test_positional_encoding_figure_draws_the_table():
    pe = sinusoidal_encoding(10, 6)
    fig = viz.positional_encoding_figure(pe)
    assert np.allclose(np.array(fig.data[0].z), pe.numpy())
    assert fig.layout.xaxis.title.text == "dimension"


def test_matrix_figure_blanks_masked_entries():
    masked = torch.tensor([[1.0, float("-inf")], [0.5, -2.0]])
    fig = viz.matrix_figure({"Q": torch.ones(2, 3), "masked": masked, "v": torch.arange(3.0)},
                            row_labels=["a", "a"], col_labels=["x", "y", "z"])
    assert [a.text for a in fig.layout.annotations] == ["Q", "masked", "v"]
    q, m, v = fig.data
    z = np.array(m.z, dtype=float)
    assert np.isnan(z[0, 1]) and z[1, 1] == -2.0
    assert m.zmin == -2.0 and m.zmax == 2.0  # the scale ignores -inf
    assert m.text[0][1] == "-∞"
    assert list(q.y) == ["0:a", "1:a"] and list(q.x) == ["0:x", "1:y", "2:z"]
    assert list(m.x) == ["0", "1"]  # two columns: not the three column labels
    assert np.array(v.z).shape == (1, 3)


def test_matrix_figure_titles_each_axis_and_gives_each_matrix_a_colour_bar():
    w = {"scores": torch.randn(3, 3), "V": torch.randn(3, 4)}
    fig = viz.matrix_figure(w, axes={"scores": ("query", "key"), "V": ("key", "dimension")})
    assert [fig.layout.yaxis.title.text, fig.layout.xaxis.title.text] == ["query", "key"]
    assert [fig.layout.yaxis2.title.text, fig.layout.xaxis2.title.text] == ["key", "dimension"]
    assert all(t.showscale for t in fig.data)
    # each colour bar sits just right of its own panel
    for k, t in enumerate(fig.data):
        assert t.colorbar.x == pytest.approx(fig.layout[f"xaxis{k + 1 if k else ''}"].domain[1] + 0.005)
    same = viz.matrix_figure(w, axes=("row", "column"))
    assert [same.layout.yaxis2.title.text, same.layout.xaxis2.title.text] == ["row", "column"]
    with pytest.raises(ValueError, match="key axes by the matrices' names"):
        viz.matrix_figure(w, axes={"Q": ("query", "dimension")})
    with pytest.raises(ValueError, match="row title, column title"):
        viz.matrix_figure(w, axes=("query",))
    as_list = viz.matrix_figure(w, axes=["row", "column"])  # a list is the same pair
    assert as_list.to_json() == same.to_json()
    with pytest.raises(ValueError, match="row title, column title"):
        viz.matrix_figure(w, axes=["query"])
    with pytest.raises(TypeError, match=r"^axes='query'; pass \(row title, column title\)"):
        viz.matrix_figure(w, axes="query")


def test_model_view_says_how_to_read_the_grid():
    fig = viz.model_view(random_attention(2, 3, 4), list("abca"), title="GPT")
    assert fig.layout.title.text == "GPT"
    subtitle = fig.layout.title.subtitle.text
    assert all(word in subtitle for word in ("rows: layers", "columns: heads", "query", "key"))
    assert fig.layout.coloraxis.colorbar.title.text == "weight"


# ------------------------------------------------------------------ training figures
HISTORY = pd.DataFrame.from_records([
    dict(step=1, loss=3.0, lr=0.1), dict(step=2, loss=2.5, lr=0.2),
    dict(step=2, val_loss=2.7, best=2.7), dict(step=3, loss=2.0, lr=0.3), dict(step=4, loss=1.8, lr=0.3),
    dict(step=4, val_loss=2.1, best=2.1),
])


def test_loss_curves_plot_train_and_validation_at_their_steps():
    fig = viz.loss_curves(HISTORY, extra=["lr"])
    train, val, lr = fig.data
    assert train.name == "train loss" and list(train.x) == [1, 2, 3, 4] and list(train.y) == [3.0, 2.5, 2.0, 1.8]
    assert val.name == "val loss" and list(val.x) == [2, 4] and list(val.y) == [2.7, 2.1]
    assert lr.yaxis == "y2" and list(lr.y) == [0.1, 0.2, 0.3, 0.3]
    assert len(viz.loss_curves(pd.DataFrame()).data[0].x) == 0  # nothing logged yet
    with pytest.raises(ValueError, match="the history has no column"):
        viz.loss_curves(HISTORY, extra=["accuracy"])


def test_live_loss_plot_outside_a_kernel_only_collects():
    live = viz.LiveLossPlot()
    for record in HISTORY.to_dict("records"):
        (live.on_eval if "val_loss" in record and not pd.isna(record["val_loss"]) else live.on_step)(None, record)
    assert live.widget is None
    train, val = live.figure().data
    assert list(val.x) == [2, 4] and list(train.y) == [3.0, 2.5, 2.0, 1.8]


def test_live_loss_plot_in_a_kernel_updates_one_widget(monkeypatch):
    shown = []
    monkeypatch.setattr(viz_training, "_in_kernel", lambda: True)
    monkeypatch.setattr("IPython.display.display", shown.append)
    live = viz.LiveLossPlot(extra=["lr"], min_interval=3600)  # steps after the first are throttled
    live.on_step(None, dict(step=1, loss=3.0, lr=0.1))
    live.on_step(None, dict(step=2, loss=2.5, lr=0.2))
    assert len(shown) == 1 and list(live.widget.data[0].x) == [1]  # throttled
    live.on_eval(None, dict(step=2, val_loss=2.7))
    assert len(shown) == 1 and shown[0] is live.widget  # displayed once, updated in place
    assert list(live.widget.data[0].x) == [1, 2] and list(live.widget.data[1].y) == [2.7]
    # the widget's points are kept as records arrive: the same as the static figure's
    widget_ys, figure_ys = [list(t.y) for t in live.widget.data], [list(t.y) for t in live.figure().data]
    assert widget_ys == figure_ys == [[3.0, 2.5], [2.7], [0.1, 0.2]]
    live.on_step(None, dict(step=1, loss=2.9, lr=0.1))  # the next run
    live.on_eval(None, dict(step=1, val_loss=2.8))
    assert [list(t.x) for t in live.widget.data] == [[1], [1], [1]] and len(shown) == 1


def test_live_loss_plot_starts_afresh_when_the_next_run_begins():
    live = viz.LiveLossPlot()
    for step, loss in [(1, 3.0), (2, 2.5), (1, 2.9), (2, 2.4), (3, 2.0)]:
        live.on_step(None, dict(step=step, loss=loss))
    train = live.figure().data[0]
    assert list(train.x) == [1, 2, 3] and list(train.y) == [2.9, 2.4, 2.0]


def test_live_loss_plot_as_a_trainer_callback():
    torch.manual_seed(0)
    data = np.random.default_rng(0).integers(0, 16, size=600).astype(np.uint16)
    model = GPT(ModelConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8))
    cfg = TrainConfig(batch_size=2, max_iters=6, warmup_iters=1, eval_interval=3, eval_iters=1, log_interval=1,
                      device="cpu")
    live = viz.LiveLossPlot()
    trainer = Trainer(model, cfg, lambda g: get_batch(data, 8, 2, g), lambda m: {"val_loss": 1.0},
                      callbacks=[live], progress=False)
    trainer.fit()
    train, val = live.figure().data
    assert list(train.x) == [1, 2, 3, 4, 5, 6] and list(val.x) == [3, 6]


def test_scaling_figure_one_line_per_label_on_log_x():
    df = pd.DataFrame(dict(params=[1e6, 1e5, 1e6, 1e5], val_loss=[1.5, 2.0, 1.6, 2.1], label=["a", "a", "b", "b"]))
    fig = viz.scaling_figure(df)
    assert [t.name for t in fig.data] == ["a", "b"] and fig.layout.xaxis.type == "log"
    assert list(fig.data[0].x) == [1e5, 1e6] and list(fig.data[0].y) == [2.0, 1.5]  # sorted by size
    assert len(viz.scaling_figure(df.drop(columns="label")).data) == 1
    assert fig.layout.xaxis.title.text == "parameters"


def test_scaling_figure_plots_non_embedding_params_when_present():
    df = pd.DataFrame(dict(params=[900, 500], non_embedding_params=[300, 100], val_loss=[1.5, 2.0]))
    fig = viz.scaling_figure(df)
    assert list(fig.data[0].x) == [100, 300] and fig.layout.xaxis.title.text == "non-embedding parameters"
    assert list(viz.scaling_figure(df, x="params").data[0].x) == [500, 900]


def test_setup_notebook_sets_the_offline_renderer(monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # restored afterwards
    viz.setup_notebook()
    viz.setup_notebook()
    assert pio.renderers.default == "plotly_mimetype+notebook"


# -------------------------------------------------------------------------- widget
def test_attention_explorer_widget_redraws_on_slider_and_model_change():
    pytest.importorskip("ipywidgets")
    tok = CharTokenizer.train("the cat sat")
    torch.manual_seed(0)
    small = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=4, n_embd=16))
    one = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    w = viz.attention_explorer({"small": (small, tok), "one": (one, tok)}, "the cat")
    z = lambda: np.array(w.figure_widget.data[0].z)  # noqa: E731
    assert (w.layer_slider.max, w.head_slider.max) == (1, 3)
    assert np.allclose(z(), w.result.attentions[0, 0].numpy())
    w.head_slider.value = 3
    assert np.allclose(z(), w.result.attentions[0, 3].numpy()) and not np.allclose(z(), w.result.attentions[0, 0])
    assert "head 3" in w.figure_widget.layout.title.text
    w.layer_slider.value = 1
    w.model_dropdown.value = "one"  # both sliders are clamped to the smaller model, then it draws once
    assert (w.layer_slider.max, w.head_slider.max, w.layer_slider.value, w.head_slider.value) == (0, 1, 0, 1)
    assert np.allclose(z(), w.result.attentions[0, 1].numpy())
    assert w.figure_widget.layout.title.text.startswith("GPT 1L×2H: layer 0, head 1")
    w.text_box.value = "cat?"  # "?" is not in the vocabulary: a message, no exception
    assert "?" in w.status.value or "vocabulary" in w.status.value
    w.text_box.value = "sat"
    assert w.status.value == "" and list(w.figure_widget.data[0].x) == ["0:s", "1:a", "2:t"]


def test_attention_explorer_shows_each_models_head_table_only_on_that_model():
    pytest.importorskip("ipywidgets")
    tok = CharTokenizer.train("the cat sat")
    small = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16))
    one = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    table = pd.DataFrame([{"layer": l, "head": h, "induction_score": 0.9} for l in range(2) for h in range(2)])
    models = {"small": (small, tok), "one": (one, tok)}
    w = viz.attention_explorer(models, "the cat", head_table={"small": table})
    assert w.figure_widget.layout.title.text.endswith("layer 0, head 0 · induction_score 0.900")
    w.model_dropdown.value = "one"
    assert "induction_score" not in w.figure_widget.layout.title.text
    with pytest.raises(ValueError, match="describes one model but 2 are given"):
        viz.attention_explorer(models, "the cat", head_table=table)
    with pytest.raises(ValueError, match="not among the models"):
        viz.attention_explorer(models, "the cat", head_table={"big": table})
    with pytest.raises(ValueError, match="head_table of 'small' has no column 'layer', 'head'.*viz.head_summary"):
        viz.attention_explorer(models, "the cat", head_table={"small": table.rename(columns=str.upper)})
    one_model = viz.attention_explorer({"small": (small, tok)}, "the cat", head_table=table)
    assert "induction_score 0.900" in one_model.figure_widget.layout.title.text


def test_head_grid_figure_lays_out_layers_by_heads():
    import pandas as pd
    from workbench.viz import head_grid_figure

    table = pd.DataFrame([{"layer": l, "head": h, "tv": 10 * l + h} for l in range(2) for h in range(3)])
    fig = head_grid_figure(table, "tv")
    assert fig.data[0].z.tolist() == [[0, 1, 2], [10, 11, 12]]
    assert list(fig.data[0].y) == ["L0", "L1"] and list(fig.data[0].x) == ["H0", "H1", "H2"]


def test_head_grid_figure_refuses_two_rows_for_one_head_naming_them():
    from workbench.viz import head_grid_figure

    table = pd.DataFrame({"layer": [0, 0, 1, 0, 1], "head": [0, 1, 0, 1, 0], "tv": [0.1, 0.2, 0.3, 0.4, 0.5]})
    with pytest.raises(ValueError, match=r"^table has more than one row for \(layer, head\) \(0, 1\), \(1, 0\); "
                                         r"pass one row per head: aggregate first, e\.g\. table\.groupby"):
        head_grid_figure(table, "tv")
    fixed = table.groupby(["layer", "head"], as_index=False)["tv"].mean()  # the fix it names works
    assert np.allclose(head_grid_figure(fixed, "tv").data[0].z, [[0.1, 0.3], [0.4, np.nan]], equal_nan=True)


def test_validation_curves_one_trace_per_run():
    import pandas as pd
    from workbench.viz import validation_curves

    h = pd.DataFrame({"step": [1, 2, 2, 4, 4], "loss": [1.0, 0.9, None, 0.8, None], "val_macro_f1": [None, None, 0.4, None, 0.5]})
    fig = validation_curves({"full": h, "frozen": h.assign(val_macro_f1=h["val_macro_f1"] / 2)})
    assert [t.name for t in fig.data] == ["full", "frozen"]
    assert list(fig.data[0].x) == [2, 4] and list(fig.data[1].y) == [0.2, 0.25]
    with pytest.raises(ValueError, match="no column"):
        validation_curves({"x": h}, metric="val_loss")


def gpt_for(tok, **config) -> GPT:
    """A small random GPT over `tok`'s vocabulary (2 layers, 2 heads, 16 wide unless `config` says)."""
    torch.manual_seed(0)
    return GPT(ModelConfig(**{"vocab_size": tok.vocab_size, "block_size": 16, "n_layer": 2, "n_head": 2,
                              "n_embd": 16, **config}))


def shown_to_a_new_view(figure_widget):
    """What a view opened later (a page reload) draws: the widget's synced state, not its Python figure."""
    return figure_widget._widget_data[0], figure_widget._widget_layout


def test_explorers_keep_the_redrawn_figure_for_a_page_reload():
    pytest.importorskip("ipywidgets")
    tok = CharTokenizer.train("the cat sat")
    model = gpt_for(tok)
    w = viz.attention_explorer({"gpt": (model, tok)}, "the cat")
    w.layer_slider.value, w.head_slider.value = 1, 1
    trace, layout = shown_to_a_new_view(w.figure_widget)
    assert np.allclose(np.array(trace["z"]), w.result.attentions[1, 1].numpy())
    assert "layer 1, head 1" in layout["title"]["text"]
    w.text_box.value = "sat"
    trace, layout = shown_to_a_new_view(w.figure_widget)
    assert list(trace["x"]) == ["0:s", "1:a", "2:t"]

    lens = viz.logit_lens_explorer(model, tok, "the")
    lens.text_box.value = "cat"
    trace, layout = shown_to_a_new_view(lens.figure_widget)
    assert list(trace["x"]) == ["0:c", "1:a", "2:t"] and np.allclose(np.array(trace["z"]), lens.prob.to_numpy())
    assert layout["title"]["text"].startswith("logit lens")


def test_explorer_widgets_keep_the_texts_newlines():
    pytest.importorskip("ipywidgets")
    import ipywidgets as widgets

    tok = CharTokenizer.train("the cat\nsat")
    model = gpt_for(tok, block_size=32)
    w = viz.attention_explorer({"gpt": (model, tok)}, "the cat\nsat")
    assert isinstance(w.text_box, widgets.Textarea)  # a one-line Text box would drop the newline
    assert "7:↵" in w.figure_widget.data[0].x
    lens = viz.logit_lens_explorer(model, tok, "cat\nsat")
    assert isinstance(lens.text_box, widgets.Textarea) and "3:↵" in lens.figure_widget.data[0].x


def test_attention_explorer_disables_a_slider_with_nothing_to_pick():
    pytest.importorskip("ipywidgets")
    tok = CharTokenizer.train("the cat sat")
    one, two = gpt_for(tok, n_layer=1, n_embd=8), gpt_for(tok, n_head=1, n_embd=8)
    w = viz.attention_explorer({"one": (one, tok), "two": (two, tok)}, "the cat")
    assert (w.layer_slider.disabled, w.head_slider.disabled) == (True, False)  # 1 layer, 2 heads
    w.model_dropdown.value = "two"
    assert (w.layer_slider.disabled, w.head_slider.disabled) == (False, True)  # 2 layers, 1 head


def test_live_loss_plot_keeps_its_figure_for_a_page_reload_at_evaluations_not_every_step(monkeypatch):
    monkeypatch.setattr(viz_training, "_in_kernel", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda widget: widget._repr_mimebundle_())  # as a kernel does
    live = viz.LiveLossPlot(extra=["lr"], min_interval=0)  # draws every step
    live.on_step(None, dict(step=1, loss=3.0, lr=0.1))
    live.on_step(None, dict(step=2, loss=2.5, lr=0.2))
    kept = lambda: [list(t["x"]) for t in live.widget._widget_data]  # noqa: E731
    assert list(live.widget.data[0].x) == [1, 2] and kept()[0] == [1]  # a step: sent to open views only
    live.on_eval(None, dict(step=2, val_loss=2.7))  # one follows the last step of every run
    assert kept() == [[1, 2], [2], [1, 2]]
    for step in range(3, 3 + live.KEEP_EVERY):
        live.on_step(None, dict(step=step, loss=2.0, lr=0.3))
    assert 2 < len(kept()[0]) < len(live.widget.data[0].x)  # and every KEEP_EVERY draws
    live.on_step(None, dict(step=50, loss=1.0, lr=0.3))
    live.on_checkpoint(None, "ckpt")  # a stop between evaluations saves a checkpoint
    assert kept()[0][-1] == 50


# ------------------------------------------------------------ interpretability figures
def test_induction_timeline_legend_sits_above_the_plot_clear_of_the_loss_axis():
    by_step = pd.DataFrame({"step": [10, 20], "max_induction_score": [0.2, 0.9], "first_copy_loss": [4.0, 4.0],
                            "second_copy_loss": [3.9, 1.0]})
    layout = vi.induction_timeline_figure(by_step, uniform=0.05).layout
    assert layout.legend.orientation == "h" and layout.legend.y >= 1 and layout.legend.yanchor == "bottom"
    assert layout.yaxis2.tickmode == "auto" and layout.yaxis2.title.text == "loss (nats/token)"


def test_ablation_heatmap_writes_tiny_effects_with_an_si_prefix():
    """Deltas of ~1e-4 were all written "0.000" while the colour bar read ±100µ."""
    table = pd.DataFrame({"layer": [0, 0], "head": [0, 1], "zero_delta": [1.2e-4, -3e-5], "mean_delta": [0.1, 0.25]})
    zero, mean = vi.ablation_figure(table, kinds=("zero", "mean")).data
    assert zero.texttemplate == "%{z:.3s}" and zero.z.tolist() == [[1.2e-4, -3e-5]]
    assert mean.texttemplate == "%{z:.3f}"  # readable as it is


def test_importance_scatter_leaves_room_for_the_top_points_label():
    table = pd.DataFrame({"layer": [0, 1], "head": [0, 1], "mean_delta": [0.1, 0.5], "prev_token": [0.2, 0.9],
                          "first_token": 0.0, "entropy": 1.0, "self_token": 0.0})
    fig = vi.importance_vs_pattern_figure(table)
    low, high = fig.layout.yaxis.range
    assert high >= 0.5 + 0.1 * 0.4 and low < 0.1 and fig.data[0].cliponaxis is False


def test_logit_lens_figure_shows_space_and_newline_tokens():
    columns = ["0:a", "1: ", "2:\n"]
    fig = vi.logit_lens_figure(pd.DataFrame([[" ", "b", " the"]], columns=columns, index=["embed"]),
                               pd.DataFrame([[0.2, 0.5, 0.9]], columns=columns, index=["embed"]))
    assert list(fig.data[0].x) == ["0:a", "1:·", "2:↵"] and fig.data[0].text.tolist() == [["·", "b", "·the"]]


# ------------------------------------------------------------ explorer widths (viz.widgets.redraw)
def test_explorers_draw_at_their_static_figures_width_not_plotlys_default_700_px():
    """Autosized, the explorers drew at 700 px in JupyterLab, beside static figures up to MAX_WIDTH wide."""
    pytest.importorskip("ipywidgets")
    from workbench.seq2seq import Seq2Seq
    from workbench.translation import date_task, train_pair_tokenizer
    from workbench.translator import TranslationConfig, Translator, fit_model_config
    from workbench.viz.attention import MAX_WIDTH
    from workbench.viz.seq2seq import cross_attention_heatmap

    def widths(figure_widget):  # the Python figure's, and what a view opened later draws
        return figure_widget.layout.width, figure_widget._widget_layout["width"]

    tok = CharTokenizer.train("the cat sat on the mat\n")
    model = gpt_for(tok, block_size=40)
    w = viz.attention_explorer({"gpt": (model, tok)}, "the cat")
    static = viz.attention_heatmap(w.result.head(0, 0), w.result.tokens).layout.width
    assert widths(w.figure_widget) == (static, static) and not w.figure_widget.layout.autosize
    w.text_box.value = "the cat sat on the mat\nthe cat sat"  # 34 tokens: the static figure is MAX_WIDTH wide
    assert widths(w.figure_widget) == (MAX_WIDTH, MAX_WIDTH)
    lens = viz.logit_lens_explorer(model, tok, "the cat sat on the mat")
    assert widths(lens.figure_widget) == (MAX_WIDTH, MAX_WIDTH)  # 200 + 60 * 22 px, cut to MAX_WIDTH

    pair_tok = train_pair_tokenizer(date_task(50, 5, 5, locales=["fr"]))
    config = TranslationConfig(model={"n_layer": 1, "n_dec_layer": 1, "n_head": 2, "n_embd": 16})
    torch.manual_seed(0)
    t = viz.translation_explorer(Translator(Seq2Seq(fit_model_config(config.model, pair_tok)).eval(), pair_tok,
                                            config), "13 septembre 1999")
    static = cross_attention_heatmap(t.result.weights[0, 0], t.result.source_tokens,
                                     t.result.target_tokens).layout.width
    assert widths(t.figure_widget) == (static, static) and static > 600


def test_redraw_keeps_a_widget_within_max_width():
    pytest.importorskip("ipywidgets")
    from workbench.viz.attention import MAX_WIDTH
    from workbench.viz.widgets import redraw

    figure_widget = go.FigureWidget(go.Figure(go.Heatmap()))
    redraw(figure_widget, go.Figure(go.Heatmap(z=[[1]]), layout=dict(width=2000, height=300)))
    assert figure_widget.layout.width == MAX_WIDTH and figure_widget.layout.height == 300
    redraw(figure_widget, go.Figure(go.Heatmap(z=[[1]])))  # a figure with no width of its own
    assert figure_widget.layout.width == MAX_WIDTH and figure_widget._widget_layout["width"] == MAX_WIDTH
