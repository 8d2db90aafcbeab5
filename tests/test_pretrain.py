"""Tests for workbench.pretrain's scaling sweep and its non-embedding parameter count."""

from dataclasses import replace

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


def test_a_corpus_given_as_a_relative_path_is_found_again_from_anywhere(tmp_path, monkeypatch):
    """Saved absolute: --resume and evaluate from another working directory read the same corpus."""
    from workbench.pretrain import load_pretrained, pretrain

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "plays.txt").write_text("KING:\nSpeak to my lord with gentle heart.\n\n" * 80, encoding="utf-8")
    monkeypatch.chdir(tmp_path / "data")
    config = RunConfig(data=DataConfig(corpus="plays.txt", tokenizer="char"),
                       model=ModelConfig(block_size=16, n_layer=1, n_head=2, n_embd=8),
                       train=TrainConfig(batch_size=4, max_iters=4, eval_interval=2, eval_iters=1, device="cpu"))
    pretrain(config, tmp_path / "run", progress=False)
    assert load_pretrained(tmp_path / "run")[2].data.corpus == str(tmp_path / "data" / "plays.txt")
    monkeypatch.chdir(tmp_path)
    longer = replace(config, train=replace(config.train, max_iters=6))
    with pytest.raises(FileNotFoundError, match="corpus plays.txt does not exist"):  # as given, from here: not found
        pretrain(longer, tmp_path / "run", resume=True, progress=False)
    saved = load_pretrained(tmp_path / "run")[2]  # as a bare --resume does: the saved config
    resumed = pretrain(replace(longer, data=saved.data), tmp_path / "run", resume=True, progress=False)
    assert resumed.metrics["final_step"] == 6
