"""workbench.compare's summary table, best mode and headline metrics, on hand-made runs (the grid itself
trains models: test_finetune.py); the attention change between two tiny GPTs."""

import pandas as pd
import pytest
import torch

from workbench.capture import attention_shift, gpt_attention
from workbench.compare import ROW_KEYS, attention_change, best_mode, headline_metrics, summarize
from workbench.config import ModelConfig
from workbench.model import GPT
from workbench.tokenizer import CharTokenizer


def _run(mode, seed, f1, steps):
    return {"mode": mode, "seed": seed, "test_accuracy": f1 + 0.01, "test_macro_f1": f1, "val_accuracy": 0.5,
            "val_macro_f1": 0.5, "train_s": 1.0, "trainable_params": 10, "steps": steps}


def test_summarize_gives_no_spread_for_a_single_seed():
    runs = pd.DataFrame([_run("full", 0, 0.40, 200), _run("full", 1, 0.44, 200), _run("hf", 0, 0.45, 60),
                         {**_run("tfidf", None, 0.39, None), "trainable_params": 66}], columns=list(ROW_KEYS))
    s = summarize(runs)
    assert list(s.index) == ["full", "hf", "tfidf"] and s["seeds"].tolist() == [2, 1, 1]
    assert s.loc["full", "test_macro_f1_mean"] == pytest.approx(0.42)
    assert s.loc["full", "test_macro_f1_std"] == pytest.approx(pd.Series([0.40, 0.44]).std(ddof=1))
    # one run says nothing about the spread: NaN (a dash in notebook.table), not a misleading 0
    for mode in ("hf", "tfidf"):
        assert pd.isna(s.loc[mode, "test_macro_f1_std"]) and pd.isna(s.loc[mode, "test_accuracy_std"]), mode
    # each mode's own step budget is in its row (TF-IDF has none)
    assert s.loc["full", "steps"] == 200 and s.loc["hf", "steps"] == 60 and pd.isna(s.loc["tfidf", "steps"])
    with pytest.raises(ValueError, match="has no column 'test_accuracy'.*pass Comparison.runs"):
        summarize(runs.drop(columns="test_accuracy"))  # not a KeyError


def _results():
    """summarize's table of a grid with two seeds of full, one of lora and hf (no parameter count for
    hf: the NaN branch), and a TF-IDF row that scores best."""
    runs = pd.DataFrame([_run("full", 0, 0.40, 200), _run("full", 1, 0.44, 200), _run("lora", 0, 0.47, 200),
                         {**_run("hf", 0, 0.45, 60), "trainable_params": None},
                         {**_run("tfidf", None, 0.60, None), "trainable_params": 66}], columns=list(ROW_KEYS))
    return summarize(runs)


def test_best_mode_leaves_tfidf_aside():
    results = _results()
    assert results["test_macro_f1_mean"].idxmax() == "tfidf"  # TF-IDF scores best here ...
    assert best_mode(results) == "lora"  # ... and is not a fine-tuned mode
    assert best_mode(results.drop(index="tfidf")) == "lora"
    with pytest.raises(ValueError, match="at least one mode besides tfidf"):
        best_mode(results.loc[["tfidf"]])


def _old_cell(results):
    """The metrics 03_finetuning's last cell wrote before headline_metrics, verbatim."""
    best_mode = results.drop(index="tfidf", errors="ignore")["test_macro_f1_mean"].idxmax()
    return {
        **{f"{mode}_test_macro_f1_mean": float(row.test_macro_f1_mean) for mode, row in results.iterrows()},
        **{f"{mode}_test_macro_f1_std": float(row.test_macro_f1_std) for mode, row in results.iterrows()
           if pd.notna(row.test_macro_f1_std)},  # a mode run once has no spread
        **{f"{mode}_test_accuracy_mean": float(row.test_accuracy_mean) for mode, row in results.iterrows()},
        **{f"{mode}_trainable_params": int(row.trainable_params) for mode, row in results.iterrows() if pd.notna(row.trainable_params)},
        "best_mode": best_mode,
    }


def test_headline_metrics_are_the_keys_and_values_the_notebook_wrote_before():
    results = _results()
    new, old = headline_metrics(results), _old_cell(results)
    assert list(new) == list(old)  # same keys in the same order (`workbench compare` lines reports up by key)
    assert all(new[k] == old[k] and type(new[k]) is type(old[k]) for k in old)
    assert "lora_test_macro_f1_std" not in new and "hf_trainable_params" not in new  # one seed; no count
    assert new["full_test_macro_f1_mean"] == pytest.approx(0.42) and new["best_mode"] == "lora"


def test_attention_change_compares_the_two_models_on_the_same_tokens():
    text = "the cat sat on the mat"
    tok = CharTokenizer.train(text)
    torch.manual_seed(0)
    pretrained = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=3, n_embd=12)).eval()
    fine_tuned = GPT(pretrained.config).eval()
    fine_tuned.load_state_dict(pretrained.state_dict())
    with torch.no_grad():  # move only layer 1's attention
        fine_tuned.transformer.h[1].attn.c_attn.weight.mul_(5)
    change = attention_change(pretrained, fine_tuned, tok, text)
    before, after = gpt_attention(pretrained, tok, text), gpt_attention(fine_tuned, tok, text)
    assert torch.equal(change.before.attentions, before.attentions) and torch.equal(change.after.attentions, after.attentions)
    pd.testing.assert_frame_equal(change.shift, attention_shift(before.attentions, after.attentions))
    assert (change.shift.loc[change.shift["layer"] == 0, "tv_distance"] == 0).all()  # layer 0 unchanged
    top = change.top(3)
    assert top.index.names == ["layer", "head"] and top["tv_distance"].is_monotonic_decreasing
    assert top["tv_distance"].iloc[0] == change.shift["tv_distance"].max()
    layer, head = change.most_changed
    assert (layer, head) == top.index[0] and layer == 1 and isinstance(head, int)
    frames = change.head_frames(layer, head)
    assert [step for step, _ in frames] == [0, 1]
    assert torch.equal(frames[0][1], before.attentions[layer, head]) and torch.equal(frames[1][1], after.attentions[layer, head])
