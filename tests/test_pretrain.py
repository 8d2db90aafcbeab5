"""Tests for workbench.pretrain's scaling sweep and its non-embedding parameter count."""

import pytest

from workbench.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.model import GPT
from workbench.pretrain import non_embedding_params, scaling_sweep
from workbench.tokenizer import train_tokenizer


@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
@pytest.mark.parametrize("tie_weights", [True, False])
def test_non_embedding_params_leave_out_wte_wpe_and_an_untied_lm_head(pos_encoding, tie_weights):
    model = GPT(ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16,
                            pos_encoding=pos_encoding, tie_weights=tie_weights))
    blocks_and_ln_f = sum(p.numel() for name, p in model.named_parameters()
                          if name.startswith(("transformer.h.", "transformer.ln_f.")))
    assert non_embedding_params(model) == blocks_and_ln_f
    embeddings = 50 * 16 * (1 if tie_weights else 2) + (16 * 16 if pos_encoding == "learned" else 0)
    assert model.num_params() - non_embedding_params(model) == embeddings


def test_scaling_sweep_reports_non_embedding_params(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "plays.txt"
    corpus.write_text("KING:\nSpeak to my lord with gentle heart.\n\n" * 80, encoding="utf-8")
    base = RunConfig(data=DataConfig(corpus=str(corpus), tokenizer="char"),
                     model=ModelConfig(block_size=16), train=TrainConfig(batch_size=4, eval_iters=1, device="cpu"))
    tokenizer = train_tokenizer("char", corpus.read_text(encoding="utf-8"))
    sweep = scaling_sweep(base, tokenizer, n_embd=[8, 16], n_layer=1, n_head=2, max_iters=2)
    assert list(sweep["n_embd"]) == [8, 16]
    assert (sweep["non_embedding_params"] < sweep["params"]).all()
    assert sweep["non_embedding_params"].is_monotonic_increasing
