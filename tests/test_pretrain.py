"""Tests for workbench.pretrain: the scaling sweep, non-embedding parameters, the saved corpus path,
loading an unfinished run, attention snapshots."""

from dataclasses import replace

import pytest
import torch

from workbench.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.model import GPT
from workbench.pretrain import non_embedding_params, scaling_sweep
from workbench.tokenizer import train_tokenizer


PLAYS = "KING:\nSpeak to my lord with gentle heart.\n\n" * 80  # a small play-shaped corpus


def tiny_run_config(tmp_path, monkeypatch, **train) -> RunConfig:
    """A 1-layer char GPT on PLAYS written to tmp_path/plays.txt (with its own encoded-data cache)."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "plays.txt"
    corpus.write_text(PLAYS, encoding="utf-8")
    return RunConfig(data=DataConfig(corpus=str(corpus), tokenizer="char"),
                     model=ModelConfig(block_size=16, n_layer=1, n_head=2, n_embd=8),
                     train=TrainConfig(batch_size=4, eval_iters=1, device="cpu", **train))


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


def test_attention_snapshots_name_an_out_of_range_layer_or_head():
    from types import SimpleNamespace

    import torch

    from workbench.pretrain import AttentionSnapshots

    tokenizer = train_tokenizer("char", "to be or not to be")
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16))
    snapshots = AttentionSnapshots(tokenizer, "to be")
    snapshots.on_eval(SimpleNamespace(model=model, step=20), {})
    (step, weights), = snapshots.frames(1, 0)
    assert step == 20 and weights.shape == (5, 5)
    with pytest.raises(ValueError, match=r"^layer 99 is out of range; pick a layer in 0\.\.1, the model's layers$"):
        snapshots.frames(99, 0)
    with pytest.raises(ValueError, match=r"^head 2 is out of range; pick a head in 0\.\.1, the model's heads$"):
        snapshots.frames(0, 2)


def test_load_pretrained_warns_when_a_run_has_no_final_model(tmp_path, monkeypatch):
    """An interrupted run (no model/) loads its latest step checkpoint's weights, saying so and how to finish
    it; a finished run, or a step checkpoint asked for by its own path, loads without a warning."""
    import shutil
    import warnings

    import torch

    from workbench.checkpoint import load_checkpoint
    from workbench.pretrain import load_pretrained, pretrain

    config = tiny_run_config(tmp_path, monkeypatch, max_iters=4, eval_interval=2)
    run = tmp_path / "run"
    pretrain(config, run, progress=False)
    step_4 = run / "checkpoints" / "step-0000004"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_pretrained(run)
        load_pretrained(step_4)
    shutil.rmtree(run / "model")  # as if stopped after its last step checkpoint
    with pytest.warns(UserWarning, match=r"run has no final model \(model/\): the run did not finish; loaded "
                      r"its latest step checkpoint, step-0000004, with the weights of step 4 .*resume the run to "
                      r"finish it \(python -m workbench pretrain --out .*--resume\)"):
        model, _, _ = load_pretrained(run)
    expected = load_checkpoint(step_4).state_dict(model)
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())


def test_attention_snapshots_start_with_the_untrained_model_and_a_finished_run_run_again_has_its_last(
        tmp_path, monkeypatch):
    """Notebook 02's slider starts before training; its training cell run again after the run finished
    trains nothing, and the figure still has the run's final attention to show."""
    from workbench.pretrain import AttentionSnapshots, pretrain

    config = tiny_run_config(tmp_path, monkeypatch, max_iters=6, eval_interval=3)
    tokenizer = train_tokenizer("char", PLAYS)
    first = AttentionSnapshots(tokenizer, "KING: Speak")
    pretrain(config, tmp_path / "run", tokenizer=tokenizer, callbacks=[first], progress=False, resume="auto")
    assert [step for step, _ in first.snapshots] == [0, 3, 6]
    assert not torch.equal(first.snapshots[0][1].attentions, first.snapshots[-1][1].attentions)  # it trained
    again = AttentionSnapshots(tokenizer, "KING: Speak")
    pretrain(config, tmp_path / "run", tokenizer=tokenizer, callbacks=[again], progress=False, resume="auto")
    assert [step for step, _ in again.snapshots] == [6]
    assert torch.equal(again.snapshots[0][1].attentions, first.snapshots[-1][1].attentions)


def test_text_samples_start_with_the_untrained_model_and_leave_training_unchanged(tmp_path, monkeypatch):
    """Notebook 02's samples begin at step 0, before any evaluation; sampling draws from its own seeded
    generator, so a run with the callback trains to the same weights as one without."""
    from workbench.pretrain import TextSamples, pretrain

    config = tiny_run_config(tmp_path, monkeypatch, max_iters=6, eval_interval=3, lr=3e-2, warmup_iters=1)
    config = replace(config, model=replace(config.model, dropout=0.1))  # training draws from the global RNG
    tokenizer = train_tokenizer("char", PLAYS)
    samples = TextSamples(tokenizer, prompt="KING:\n", max_new_tokens=12)
    with_samples = pretrain(config, tmp_path / "a", tokenizer=tokenizer, callbacks=[samples], progress=False)
    df = samples.df
    assert list(df["step"]) == [0, 3, 6] and df["val_loss"].isna().tolist() == [True, False, False]
    assert all(text.startswith("KING:\n") for text in df["text"]) and df["text"][0] != df["text"][2]
    without = pretrain(config, tmp_path / "b", tokenizer=tokenizer, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(with_samples.model.parameters(), without.model.parameters()))
    again = TextSamples(tokenizer, prompt="KING:\n", max_new_tokens=12)
    pretrain(config, tmp_path / "a", tokenizer=tokenizer, callbacks=[again], progress=False, resume="auto")
    assert list(again.df["step"]) == [6] and again.df["text"][0] == df["text"][2]  # the finished run's last


def test_training_plan_puts_the_estimate_beside_the_run():
    from workbench.pretrain import training_plan

    config = RunConfig(data=DataConfig(tokenizer="char"), model=ModelConfig(block_size=16, n_layer=1, n_head=2, n_embd=8),
                       train=TrainConfig(batch_size=4, grad_accum=2, max_iters=900, device="cpu"))
    tokenizer = train_tokenizer("char", PLAYS)
    model = GPT(replace(config.model, vocab_size=tokenizer.vocab_size))
    plan = training_plan(config, tokenizer, step_s=0.05)
    assert list(plan.columns) == ["estimate"]
    estimate = plan["estimate"]
    assert estimate["parameters"] == model.num_params() and type(estimate["parameters"]) is int
    assert estimate["tokens per step"] == 4 * 2 * 16 and estimate["steps"] == 900
    assert estimate["ms per step"] == pytest.approx(50) and estimate["training time (s)"] == pytest.approx(45)
    assert estimate["tokens per second"] == pytest.approx(128 / 0.05)
    metrics = {"params": 1000, "flops_per_token": 6000, "final_step": 900, "ms_per_iter_median": 60.0,
               "tokens_per_s": 2000.0, "train_s": 54.0, "wall_s": 70.0}
    run = training_plan(config, tokenizer, 0.05, metrics)["run"]
    assert run["training time (s)"] == 54.0 and run["wall time, with evaluations (s)"] == 70.0
    assert run["ms per step"] == 60.0 and run["steps"] == 900 and run["tokens per step"] == 128
    with pytest.raises(ValueError, match="step_s must be > 0 seconds.*probe_step_time"):
        training_plan(config, tokenizer, 0.0)


def test_probe_step_time_times_real_training_steps(tmp_path, monkeypatch):
    """02's estimate comes from real steps of the run's model (not a shape-only one): a positive median."""
    from workbench.pretrain import probe_step_time

    config = tiny_run_config(tmp_path, monkeypatch, max_iters=6)
    step_s = probe_step_time(config, train_tokenizer("char", PLAYS), steps=3)
    assert isinstance(step_s, float) and 0 < step_s < 10
