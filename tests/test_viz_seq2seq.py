"""Cross-attention figures, checked on their data: target rows x source columns with unique labels,
the layer/head menu and grid, the step slider, the speed figure, and the live explorer widget."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.viz.seq2seq import (cross_attention_explorer_figure, cross_attention_grid, cross_attention_heatmap,
                                   cross_attention_over_checkpoints, decoding_speed_figure)

SRC = list("3 mai 1999")  # two "9"s and a space: labels must keep them apart
TGT = list("1999-05-03") + ["<eos>"]


def pattern(L=2, H=3):
    """(L, H, T, S) where head (l, h) attends from target t to source (t + l + h) % S."""
    T, S = len(TGT), len(SRC)
    w = torch.zeros(L, H, T, S)
    for l in range(L):
        for h in range(H):
            for t in range(T):
                w[l, h, t, (t + l + h) % S] = 1.0
    return w


def test_heatmap_rows_are_target_tokens_and_columns_source_tokens():
    w = pattern()[1, 2]
    fig = cross_attention_heatmap(w, SRC, TGT, title="t")
    (trace,) = fig.data
    assert np.array_equal(np.array(trace.z), w.numpy())
    assert list(trace.x) == ["0:3", "1:·", "2:m", "3:a", "4:i", "5:·", "6:1", "7:9", "8:9", "9:9"]  # a space as "·"
    assert len(set(trace.x)) == len(SRC)
    assert list(trace.y)[-1] == "10:<eos>" and fig.layout.yaxis.autorange == "reversed"
    assert "target %{y}" in trace.hovertemplate and "source %{x}" in trace.hovertemplate and "%{z" in trace.hovertemplate
    with pytest.raises(ValueError, match="11 target and 3 source tokens"):
        cross_attention_heatmap(w, SRC[:3], TGT)
    with pytest.raises(ValueError, match=r"\(T, S\)"):
        cross_attention_heatmap(pattern(), SRC, TGT)


def test_explorer_menu_has_every_layer_head_and_the_mean():
    w = pattern()
    fig = cross_attention_explorer_figure(w, SRC, TGT)
    assert len(fig.data) == 2 * 3 + 1 and [t.visible for t in fig.data].count(True) == 1
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons][:2] == ["layer 0, head 0", "layer 0, head 1"] and buttons[-1].label == "mean of all heads"
    k = 3 + 2  # layer 1, head 2
    assert buttons[k].args[0]["visible"] == [j == k for j in range(7)]
    assert np.array_equal(np.array(fig.data[k].z), w[1, 2].numpy())
    assert np.allclose(np.array(fig.data[-1].z), w.mean((0, 1)).numpy())


def test_grid_has_a_panel_per_layer_and_head():
    w = pattern()
    fig = cross_attention_grid(w, SRC, TGT)
    assert len(fig.data) == 6 and [a.text for a in fig.layout.annotations][:2] == ["L0 H0", "L0 H1"]
    assert np.array_equal(np.array(fig.data[4].z), w[1, 1].numpy())


def test_step_slider_one_frame_per_checkpoint():
    frames = [(0, pattern()[0, 0]), (100, pattern()[1, 2])]
    fig = cross_attention_over_checkpoints(frames, SRC, TGT)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "100"]
    assert fig.layout.sliders[0].steps[1].args[0]["visible"] == [False, True]
    assert np.array_equal(np.array(fig.data[1].z), frames[1][1].numpy())
    with pytest.raises(ValueError, match="no checkpoints given"):
        cross_attention_over_checkpoints([], SRC, TGT)
    with pytest.raises(ValueError, match="differ in shape"):
        cross_attention_over_checkpoints([(0, pattern()[0, 0]), (1, pattern()[0, 0][:, :3])], SRC, TGT)


def test_decoding_speed_figure_one_point_per_decoder():
    table = pd.DataFrame({"exact_match": [0.9, 0.92], "sentences_per_s": [300.0, 60.0]}, index=["greedy", "beam 4"])
    (trace,) = decoding_speed_figure(table).data
    assert list(trace.text) == ["greedy", "beam 4"] and list(trace.y) == [0.9, 0.92]
    with pytest.raises(ValueError, match="exact_match"):
        decoding_speed_figure(table.drop(columns="exact_match"))
    fig = decoding_speed_figure(table.assign(exact_match=[1.0, 0.92]))
    low, high = fig.layout.yaxis.range
    assert high >= 1.0 + 0.1 * 0.08 and low < 0.92 and fig.data[0].cliponaxis is False  # room for the label at 1.0
    # the range follows the points, as the other labelled scatters (label_room), not a fixed 0..1.12:
    # decoders 2 points apart are told apart
    low, high = decoding_speed_figure(table.assign(exact_match=[0.50, 0.52])).layout.yaxis.range
    assert 0.48 < low < 0.5 and 0.52 < high < 0.54


def test_translation_explorer_redraws_on_text_and_sliders():
    pytest.importorskip("ipywidgets")
    from workbench.seq2seq import Seq2Seq
    from workbench.translation import date_task, train_pair_tokenizer
    from workbench.translator import TranslationConfig, Translator, fit_model_config
    from workbench.viz.widgets import TranslationExplorer

    tok = train_pair_tokenizer(date_task(50, 5, 5, locales=["fr"]))
    config = TranslationConfig(model={"n_layer": 1, "n_dec_layer": 2, "n_head": 2, "n_embd": 16})
    torch.manual_seed(0)
    translator = Translator(Seq2Seq(fit_model_config(config.model, tok)).eval(), tok, config)
    w = TranslationExplorer(translator, "3 mai 1999")
    assert w.output.value.startswith("translation: <b>")
    assert list(w.figure_widget.data[0].x) == [f"{i}:{c}" for i, c in enumerate("3·mai·1999")]
    assert "mean of heads" in w.figure_widget.layout.title.text
    w.head_slider.value = 1
    assert "layer 1, head 1" in w.figure_widget.layout.title.text
    assert np.allclose(np.array(w.figure_widget.data[0].z), w.result.weights[1, 1].numpy())
    w.text_box.value = "7 juin 2001"
    assert list(w.figure_widget.data[0].x)[0] == "0:7"
    w.text_box.value = ""
    assert "empty" in w.output.value
    assert w.head_slider.style.description_width == "initial"  # "head (-1: mean)" whole, not "head (-1: ..."
    assert not w.layer_slider.disabled  # two decoder layers to pick from


def test_translation_explorer_keeps_its_figure_for_a_page_reload_and_disables_a_lone_layer():
    pytest.importorskip("ipywidgets")
    from workbench.seq2seq import Seq2Seq
    from workbench.translation import date_task, train_pair_tokenizer
    from workbench.translator import TranslationConfig, Translator, fit_model_config
    from workbench.viz.widgets import TranslationExplorer

    tok = train_pair_tokenizer(date_task(50, 5, 5, locales=["fr"]))
    config = TranslationConfig(model={"n_layer": 1, "n_dec_layer": 1, "n_head": 2, "n_embd": 16})
    torch.manual_seed(0)
    w = TranslationExplorer(Translator(Seq2Seq(fit_model_config(config.model, tok)).eval(), tok, config), "3 mai 1999")
    assert w.layer_slider.disabled  # min == max == 0: moving it did nothing
    w.head_slider.value = 0
    shown = w.figure_widget._widget_data[0]  # what a view opened later (a page reload) draws
    assert np.allclose(np.array(shown["z"]), w.result.weights[0, 0].numpy())
    assert "layer 0, head 0" in w.figure_widget._widget_layout["title"]["text"]
    assert 0 < w.figure_widget.layout.width <= 950  # its static figure's width, within the notebook column


def test_cross_attention_figures_fit_the_notebook_column():
    src, tgt = [f"s{i}" for i in range(40)], [f"t{i}" for i in range(30)]
    w = torch.rand(2, 12, 30, 40).softmax(-1)
    for fig in (cross_attention_heatmap(w[0, 0], src, tgt), cross_attention_explorer_figure(w, src, tgt),
                cross_attention_grid(w, src, tgt), cross_attention_over_checkpoints([(0, w[0, 0])], src, tgt)):
        assert fig.layout.width <= 1000
