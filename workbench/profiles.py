"""Profiles: how big each notebook's work is, by name — one typed place for the notebooks, the CLI
and the report runner.

    smoke    CI: each notebook within a minute on 2 cores
    default  a laptop CPU: the whole report within ten minutes, with results worth looking at
    full     GPU-sized

A `Profile` holds one settings dataclass per notebook, named after the notebook's topic
(`01_attention` -> `Profile.attention`); `notebook.start` hands the notebook its own as
`ctx.settings`. Model and loop sizes are ordinary `RunConfig` / `FinetuneConfig` objects built from
the presets in `workbench.config`, so they are validated when this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import FinetuneConfig, RunConfig, finetune_train, preset


@dataclass(frozen=True)
class AttentionSettings:
    """01_attention: the small GPT trained on the spot when 02_pretraining has not left one."""

    gpt: RunConfig


@dataclass(frozen=True)
class SweepSettings:
    """02_pretraining's width sweep: one model per width, the same data, budget and seed."""

    n_embd: list[int]
    n_layer: int
    n_head: int
    max_iters: int


@dataclass(frozen=True)
class PretrainingSettings:
    run: RunConfig
    sweep: SweepSettings
    snapshot_every: int  # keep the weights every this many steps, for 06_interpretability (pretrain.WeightSnapshots)


@dataclass(frozen=True)
class FinetuningSettings:
    """03_finetuning: the task's size and the grid of modes x seeds (`compare.compare_modes`)."""

    max_chars: int  # passages are cut to this many characters
    per_label: int | None  # passages per label and split (None: all)
    modes: list[str]
    seeds: list[int]
    config: FinetuneConfig  # shared by every mode
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per mode, nested like FinetuneConfig
    mode_seeds: dict[str, list[int]] = field(default_factory=dict)  # per mode, instead of `seeds`


@dataclass(frozen=True)
class EvaluationSettings:
    max_chars: int | None  # characters of each held-out document scored (None: all); the task is 03's
    n_prompts: int
    prompt_chars: int
    continuation_chars: int
    compression_chars: int
    sparsities: list[float]
    classifier_examples: int | None
    runs: int  # timing repeats of the compression table


@dataclass(frozen=True)
class Seq2SeqSettings:
    """05_seq2seq: the date task's size, the translator's shape and loop, and what is scored.

    `model` and `train` are fields of `seq2seq.Seq2SeqConfig` and `TrainConfig`; `config()` builds and
    validates the `translator.TranslationConfig` (kept as dicts here so importing the profiles does not
    import torch; tests/test_translator.py builds every profile's config).
    """

    n_train: int
    n_val: int
    n_test: int
    model: dict[str, Any]
    train: dict[str, Any]
    beams: list[int]  # beam widths compared (1 is greedy)
    val_translate: int  # validation rows translated at each evaluation (the live exact-match curve)
    alignment_rows: int | None  # test rows with a month name measured by translator.month_alignment (None: all)

    def config(self):
        from .translator import TranslationConfig

        return TranslationConfig(model=dict(self.model), train=dict(self.train), val_translate=self.val_translate)


@dataclass(frozen=True)
class InterpretabilitySettings:
    """06_interpretability: how much held-out text and how many repeated sequences it measures on, and
    the small GPT (with weight snapshots) trained on the spot when 02_pretraining has not left one."""

    gpt: RunConfig
    snapshot_every: int  # steps between the fallback GPT's weight snapshots
    n_windows: int  # held-out windows of block_size tokens for head ablation and the logit lens
    induction_length: int  # random tokens per copy; two copies must fit the model's block_size
    induction_batch: int  # repeated sequences per measurement


@dataclass(frozen=True)
class Profile:
    attention: AttentionSettings
    pretraining: PretrainingSettings
    finetuning: FinetuningSettings
    evaluation: EvaluationSettings
    seq2seq: Seq2SeqSettings
    interpretability: InterpretabilitySettings

    def for_notebook(self, name: str) -> Any:
        """The settings of notebook `name` ("02_pretraining" -> self.pretraining); None if it has none."""
        return getattr(self, name.split("_", 1)[-1], None)


ALL_MODES = ["full", "frozen", "scratch", "lora", "multitask", "hf"]

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        attention=AttentionSettings(gpt=preset("smoke", train={"max_iters": 40})),
        pretraining=PretrainingSettings(
            run=preset("smoke", data={"tokenizer": "bpe", "vocab_size": 512}, train={"max_iters": 40, "eval_interval": 20}),
            sweep=SweepSettings(n_embd=[16, 32, 48], n_layer=1, n_head=2, max_iters=15), snapshot_every=10),
        finetuning=FinetuningSettings(
            max_chars=300, per_label=24, modes=ALL_MODES, seeds=[0],
            config=FinetuneConfig(max_len=32, train=finetune_train(max_iters=8, batch_size=8, eval_interval=4)),
            overrides={"hf": {"train": {"max_iters": 4}}}),
        evaluation=EvaluationSettings(max_chars=3000, n_prompts=4, prompt_chars=120, continuation_chars=60,
                                      compression_chars=3000, sparsities=[0.5], classifier_examples=64, runs=2),
        seq2seq=Seq2SeqSettings(
            n_train=3000, n_val=100, n_test=100, beams=[1, 4], val_translate=50, alignment_rows=30,
            model={"n_layer": 1, "n_dec_layer": 1, "n_head": 2, "n_embd": 32, "max_src_len": 48, "max_tgt_len": 12},
            train={"max_iters": 150, "eval_interval": 50, "batch_size": 32, "lr": 3e-3, "warmup_iters": 15}),
        interpretability=InterpretabilitySettings(gpt=preset("smoke", train={"max_iters": 40, "eval_interval": 20}),
                                                  snapshot_every=10, n_windows=4, induction_length=12,
                                                  induction_batch=4),
    ),
    "default": Profile(
        attention=AttentionSettings(gpt=preset(
            "smoke", model={"block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 64},
            train={"max_iters": 300, "eval_interval": 100, "batch_size": 16, "lr": 3e-3})),
        pretraining=PretrainingSettings(
            run=preset("cpu", data={"tokenizer": "bpe", "vocab_size": 2048},
                       model={"block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 128, "pos_encoding": "rope"},
                       # eval_iters 8: the same 512 of the ~2,300 validation windows at every evaluation;
                       # the final val_loss scores the whole split
                       train={"max_iters": 900, "eval_interval": 150, "eval_iters": 8, "lr": 2e-3, "min_lr": 2e-4}),
            sweep=SweepSettings(n_embd=[32, 64, 128], n_layer=2, n_head=4, max_iters=120), snapshot_every=60),
        # 200-character passages (~70 BPE tokens): max_len 80 lets the GPT read what TF-IDF reads;
        # dropout 0: the same validation F1 as 0.1 and 30% faster on CPU
        finetuning=FinetuningSettings(
            max_chars=200, per_label=None, modes=ALL_MODES, seeds=[0, 1, 2], mode_seeds={"hf": [0]},
            config=FinetuneConfig(max_len=80, dropout=0.0, train=finetune_train(max_iters=200, batch_size=16,
                                                                                eval_interval=100)),
            overrides={"full": {"train": {"lr": 2e-3}}, "multitask": {"train": {"lr": 2e-3}},
                       "scratch": {"train": {"lr": 5e-4}}, "lora": {"train": {"lr": 5e-3}},
                       "hf": {"dropout": 0.1, "train": {"lr": 1e-4, "max_iters": 60, "eval_interval": 60,
                                                        "dtype": "bfloat16"}}}),
        evaluation=EvaluationSettings(max_chars=None, n_prompts=20, prompt_chars=200,
                                      continuation_chars=100, compression_chars=20000, sparsities=[0.25, 0.5, 0.75],
                                      classifier_examples=400, runs=5),
        # char level, 2+2 layers of width 64: the sizes that learn dates within the notebook's 2.5 minutes;
        # float32: at width 64 bf16 autocast gains nothing on a CPU (51-57 s against 53-58 s a run)
        seq2seq=Seq2SeqSettings(
            n_train=20000, n_val=300, n_test=1000, beams=[1, 4, 8], val_translate=100, alignment_rows=200,
            model={"n_layer": 2, "n_dec_layer": 2, "n_head": 4, "n_embd": 64, "max_src_len": 48, "max_tgt_len": 12},
            train={"max_iters": 1500, "eval_interval": 250, "batch_size": 64, "lr": 3e-3, "min_lr": 3e-4,
                   "warmup_iters": 50, "dtype": "float32"}),
        interpretability=InterpretabilitySettings(
            gpt=preset("smoke", model={"block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 64},
                       train={"max_iters": 300, "eval_interval": 100, "batch_size": 16, "lr": 3e-3}),
            snapshot_every=30, n_windows=16, induction_length=30, induction_batch=16),
    ),
    "full": Profile(
        attention=AttentionSettings(gpt=preset("cpu")),
        pretraining=PretrainingSettings(
            run=preset("gpu", data={"tokenizer": "bpe", "vocab_size": 8192}),
            sweep=SweepSettings(n_embd=[128, 256, 384], n_layer=6, n_head=6, max_iters=1000), snapshot_every=250),
        finetuning=FinetuningSettings(
            max_chars=600, per_label=None, modes=ALL_MODES, seeds=[0, 1, 2],
            config=FinetuneConfig(train=finetune_train(epochs=3.0, batch_size=32)),
            overrides={"hf": {"train": {"lr": 5e-5}}}),
        evaluation=EvaluationSettings(max_chars=None, n_prompts=100, prompt_chars=300,
                                      continuation_chars=150, compression_chars=100000, sparsities=[0.25, 0.5, 0.75, 0.9],
                                      classifier_examples=None, runs=5),
        seq2seq=Seq2SeqSettings(
            n_train=100000, n_val=1000, n_test=5000, beams=[1, 4, 8], val_translate=500, alignment_rows=None,
            model={"n_layer": 3, "n_dec_layer": 3, "n_head": 4, "n_embd": 128, "max_src_len": 48, "max_tgt_len": 12,
                   "dropout": 0.1, "label_smoothing": 0.1},
            train={"max_iters": 6000, "eval_interval": 500, "batch_size": 128, "lr": 2e-3, "min_lr": 2e-4,
                   "warmup_iters": 200}),
        interpretability=InterpretabilitySettings(gpt=preset("cpu"), snapshot_every=100, n_windows=64,
                                                  induction_length=60, induction_batch=16),
    ),
}


def get_profile(name: str) -> Profile:
    """The named profile; a one-line ValueError naming the choices otherwise."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
