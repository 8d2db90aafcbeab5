"""Pretraining a GPT on a corpus, end to end, and loading what it wrote.

`pretrain(config, out_dir)` is what `python -m workbench pretrain` and notebook 02
call: load the corpus, train (or reload) the tokenizer, encode and cache the splits,
build the GPT, run the `Trainer`, and write the run directory:

    out_dir/model/          the final (best) model: model.safetensors, config.json, tokenizer.json
    out_dir/checkpoints/    resumable step checkpoints and a `latest` pointer
    out_dir/history.csv     every logged metric
    out_dir/metrics.json    headline figures: val_loss, tokens_per_s, ms_per_iter_median, wall_s, params

Everything that can be checked is checked before the first file is written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import ModelConfig, RunConfig, TrainConfig
from .data import encode_splits, get_batch, load_corpus
from .evaluate import lm_evaluator
from .model import GPT
from .tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from .distributed import barrier, init_distributed, rank_slice
from .train import History, Trainer, resolve_device

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

FINAL = "model"


@dataclass
class PretrainResult:
    model: GPT
    tokenizer: Tokenizer
    config: RunConfig
    history: History
    metrics: dict[str, Any]
    run_dir: Path | None


def check_fresh_out_dir(out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite an existing run unless resuming it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; choose a directory path for --out")
    if resume:
        if ckpt.latest_checkpoint(out_dir) is None:
            raise FileNotFoundError(f"--resume: {out_dir} has no checkpoint to resume; drop --resume to start a new run")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} already holds files; pass --resume to continue that run or choose another --out")


def _check_same(saved: dict, given: dict, section: str) -> None:
    for key, value in given.items():
        if key in saved and saved[key] != value:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{section}.{key}={value!r} differs from the checkpoint's {saved[key]!r}; drop {flag} "
                             f"(or the --preset that sets it) to resume as saved, or start a new run in another --out")


def pretrain(config: RunConfig, out_dir: str | Path | None = None, resume: bool | str = False,
             callbacks: Iterable[Any] = (), progress: bool = True, tokenizer: Tokenizer | None = None
             ) -> PretrainResult:
    """Train a GPT language model as `config` says; write the run to `out_dir` (if given).

    A `tokenizer` may be passed in (e.g. one a notebook already trained); otherwise one is
    trained on the train split as config.data says (or reloaded when resuming).

    Returns:
        PretrainResult with the trained (best-validation) model, its tokenizer, the History and
        the headline metrics also written to out_dir/metrics.json. Under torchrun with
        parallel="fsdp" the model holds only this rank's shard; `load_pretrained(out_dir)` gives
        the whole one. Interrupted (Ctrl-C), it returns the history so far, metrics["completed"] is
        False (final_step says where it stopped), and nothing final is written: the checkpoint saved at the
        interruption is the run, and `resume=True` continues it. `resume="auto"` continues the
        run in out_dir when it has a checkpoint and starts one otherwise (a notebook cell that can
        simply be run again after an interruption).
    """
    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else None
    if resume == "auto":
        resume = out is not None and ckpt.latest_checkpoint(out) is not None
    if out is not None:
        check_fresh_out_dir(out, resume)
    device = resolve_device(config.train.device)
    dist = init_distributed(device.type)  # a single process unless launched by torchrun
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    barrier(dist)  # every rank has checked --out before rank 0 writes into it

    corpus = load_corpus(config.data.corpus, text_column=config.data.text_column)
    saved = ckpt.load_checkpoint(out) if (out is not None and resume) else None
    if saved is not None:
        _check_same(saved.artifacts["config"]["data"], vars(config.data), "data")
        _check_same(saved.artifacts["config"]["model"], {k: v for k, v in vars(config.model).items()
                                                         if k != "vocab_size"}, "model")
        tokenizer = load_tokenizer(saved.artifacts["tokenizer"])
    elif tokenizer is None:
        # BPE learns merges from the training text only; the char vocabulary is just the character
        # set, taken from the whole corpus as nanoGPT does, so held-out text always encodes.
        text = corpus.train_text if config.data.tokenizer == "bpe" else corpus.text
        tokenizer = train_tokenizer(config.data.tokenizer, text,
                                    config.data.vocab_size if config.data.tokenizer == "bpe" else None)
    config = RunConfig(data=config.data, model=ModelConfig(**{**vars(config.model), "vocab_size": tokenizer.vocab_size}),
                       train=config.train)
    if not dist.is_main:
        barrier(dist)  # rank 0 encodes and caches the splits; the others then read the cache
    splits = encode_splits(corpus, tokenizer)
    if dist.is_main:
        barrier(dist)
    T, tc = config.model.block_size, config.train
    for name in ("train", "val"):
        if len(splits[name]) <= T:
            raise ValueError(f"the {name} split has {len(splits[name])} tokens, fewer than block_size+1={T + 1}; "
                             f"lower --block-size or use a larger corpus")

    torch.manual_seed(tc.seed)
    model = GPT(config.model)
    train_data = splits["train"]

    def next_batch(generator: torch.Generator):
        # every rank draws the same global batch and keeps its own slice of it
        batch = get_batch(train_data, T, tc.batch_size * dist.world_size, generator, device=device)
        return rank_slice(batch, dist)

    evaluate = lm_evaluator(splits["val"], T, tc.batch_size * dist.world_size * 4, tc.eval_iters, device, seed=tc.seed)
    artifacts = {"config": config.to_dict(), "tokenizer": tokenizer.to_dict()}
    trainer = Trainer(model, tc, next_batch, evaluate, run_dir=out, artifacts=artifacts,
                      callbacks=callbacks, progress=progress, dist=dist, device=device)
    if saved is not None:
        trainer.resume(saved.path)
    history = trainer.fit()

    metrics = {
        "completed": trainer.finished,
        "val_loss": trainer.best,
        "best_step": trainer.best_step,
        "final_step": trainer.step,
        "params": model.num_params(),
        "flops_per_token": model.flops_per_token(),
        **trainer.summary(),
        "wall_s": time.perf_counter() - t_start,
        "device": str(device),
        "corpus": corpus.name,
        "tokenizer": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "train_tokens": int(len(splits["train"])),
        "val_tokens": int(len(splits["val"])),
    }
    if dist.enabled:
        metrics["world_size"] = dist.world_size
        metrics["parallel"] = tc.parallel
    if not trainer.finished:  # Ctrl-C: the checkpoint just written is the run; nothing final yet
        log.warning("pretraining stopped at step %d of %d; resume with resume=True (--resume)", trainer.step,
                    tc.max_iters)
        return PretrainResult(model, tokenizer, config, history, metrics, out)
    weights = trainer.weights() if out is not None else None  # FSDP: every rank helps gather them
    if out is not None and dist.is_main:
        ckpt.save_checkpoint(out / FINAL, model, artifacts, weights=weights)
        history.df.to_csv(out / "history.csv", index=False)
        ckpt.write_json(out / "metrics.json", metrics)
    return PretrainResult(model, tokenizer, config, history, metrics, out)


def load_final(path: str | Path, needs: tuple[str, ...], hint: str) -> ckpt.Checkpoint:
    """The checkpoint in a run directory's model/ folder (or `path` itself, a checkpoint directory),
    which must carry the artifacts `needs`; otherwise a FileNotFoundError ending in `hint`."""
    path = Path(path)
    if (path / FINAL / ckpt.MODEL_FILE).is_file():
        path = path / FINAL
    c = ckpt.load_checkpoint(path)
    if any(name not in c.artifacts for name in needs):
        raise FileNotFoundError(f"{c.path} lacks {' or '.join(f'{name}.json' for name in needs)}; {hint}")
    return c


def load_pretrained(path: str | Path, device: str = "cpu") -> tuple[GPT, Tokenizer, RunConfig]:
    """Load a GPT, its tokenizer and RunConfig from a run directory or checkpoint directory."""
    c = load_final(path, ("config", "tokenizer"), "point at a pretraining run's --out")
    config = RunConfig.from_dict(c.artifacts["config"])
    tokenizer = load_tokenizer(c.artifacts["tokenizer"])
    if tokenizer.vocab_size != config.model.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model expects "
                         f"{config.model.vocab_size}; use the tokenizer.json saved with this checkpoint")
    model = GPT(config.model)
    c.load_weights(model)
    return model.to(device).eval(), tokenizer, config


# ------------------------------------------------------------ notebook helpers
def probe_step_time(config: RunConfig, tokenizer: Tokenizer, steps: int = 10) -> float:
    """Median seconds per optimizer step of `config`, measured over `steps` steps on the real data.

    Used to estimate a long training cell's duration before running it.
    """
    from .train import autocast_context, make_optimizer

    corpus = load_corpus(config.data.corpus, text_column=config.data.text_column)
    data = encode_splits(corpus, tokenizer)["train"]
    tc, T = config.train, config.model.block_size
    device = resolve_device(tc.device)
    model = GPT(ModelConfig(**{**vars(config.model), "vocab_size": tokenizer.vocab_size})).to(device)
    optimizer = make_optimizer(model, tc, device)
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps + 2):  # the first two warm up allocators and kernels
        t0 = time.perf_counter()
        for _ in range(tc.grad_accum):
            x, y = get_batch(data, T, tc.batch_size, g, device=device)
            with autocast_context(device, tc.dtype):
                _, loss = model(x, y)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:]))


class TextSamples:
    """Trainer callback: at every evaluation, generate a sample from a fixed prompt and seed."""

    def __init__(self, tokenizer: Tokenizer, prompt: str = "\n", max_new_tokens: int = 120, seed: int = 0,
                 temperature: float = 0.8):
        self.tokenizer, self.prompt, self.n, self.seed, self.temperature = tokenizer, prompt, max_new_tokens, seed, temperature
        self.samples: list[dict] = []

    def on_eval(self, trainer: Trainer, record: dict) -> None:
        model = ckpt._unwrap(trainer.model)
        idx = torch.tensor([self.tokenizer.encode(self.prompt)], device=trainer.device)
        out = model.generate(idx, self.n, temperature=self.temperature, top_k=50, seed=self.seed)
        self.samples.append({"step": trainer.step, "val_loss": record.get("val_loss"),
                             "text": self.tokenizer.decode(out[0].tolist())})

    @property
    def df(self):
        import pandas as pd
        return pd.DataFrame(self.samples)


class AttentionSnapshots:
    """Trainer callback: attention of a fixed probe text at every evaluation (and before training)."""

    def __init__(self, tokenizer: Tokenizer, text: str):
        self.tokenizer, self.text = tokenizer, text
        self.snapshots: list[tuple[int, Any]] = []  # (step, capture.AttentionResult)

    def capture(self, model, step: int) -> None:
        from .capture import gpt_attention

        model = ckpt._unwrap(model)
        was_training = model.training
        self.snapshots.append((step, gpt_attention(model, self.tokenizer, self.text)))
        model.train(was_training)

    def on_eval(self, trainer: Trainer, record: dict) -> None:
        self.capture(trainer.model, trainer.step)

    def frames(self, layer: int, head: int) -> list[tuple[int, torch.Tensor]]:
        """(step, weights (T, T)) of one head over training, for viz.attention_over_checkpoints."""
        return [(step, result.attentions[layer, head]) for step, result in self.snapshots]

    @property
    def tokens(self) -> list[str]:
        return self.snapshots[-1][1].tokens if self.snapshots else []


def scaling_sweep(base: RunConfig, tokenizer: Tokenizer, n_embd: list[int], n_layer: int, n_head: int,
                  max_iters: int) -> pd.DataFrame:
    """Train one model per width with the same data, budget and seed; val loss against parameters."""
    import pandas as pd

    rows = []
    for width in n_embd:
        cfg = RunConfig(data=base.data,
                        model=ModelConfig(**{**vars(base.model), "n_embd": width, "n_layer": n_layer, "n_head": n_head}),
                        train=TrainConfig(**{**vars(base.train), "max_iters": max_iters,
                                             "eval_interval": max_iters, "warmup_iters": max(1, max_iters // 10)}))
        result = pretrain(cfg, tokenizer=tokenizer, progress=False)
        rows.append({"n_embd": width, "n_layer": n_layer, "params": result.metrics["params"],
                     "val_loss": result.metrics["val_loss"], "train_s": result.metrics.get("train_s"),
                     "shape": f"{n_layer}x{width}"})
    return pd.DataFrame(rows)
