"""Pretraining a GPT on a corpus, end to end, and loading what it wrote.

`pretrain(config, out_dir)` is what `python -m workbench pretrain` and notebook 02
call: load the corpus, train (or reload) the tokenizer, encode and cache the splits,
build the GPT and its evaluator; `workbench.run.Run` does the rest (checks, resume,
the Trainer, Ctrl-C, and the run directory):

    out_dir/model/          the final (best) model: model.safetensors, config.json, tokenizer.json
    out_dir/checkpoints/    resumable step checkpoints and a `latest` pointer
    out_dir/history.csv     every logged metric
    out_dir/metrics.json    headline figures: val_loss, tokens_per_s, ms_per_iter_median, wall_s, params
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch

from .checkpoint import read_json
from .config import RunConfig
from .data import corpus_spec, encode_splits, get_batch, load_corpus
from .distributed import barrier, rank_slice
from .evaluate import heldout_loss, lm_evaluator
from .model import GPT, eval_mode
from .run import Run, load_final, setup_device
from .tokenizer import Tokenizer, tokenizer_from_dict, train_corpus_tokenizer
from .train import Callback, History, Trainer, resolve_device, time_steps

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    model: GPT
    tokenizer: Tokenizer
    config: RunConfig
    history: History
    metrics: dict[str, Any]
    run_dir: Path | None


def pretrain(config: RunConfig, out_dir: str | Path | None = None, resume: bool | str = False,
             callbacks: Iterable[Callback] = (), progress: bool = True, tokenizer: Tokenizer | None = None
             ) -> PretrainResult:
    """Train a GPT language model as `config` says; write the run to `out_dir` (if given).

    A `tokenizer` may be passed in (e.g. one a notebook already trained); otherwise one is
    trained on the train split as config.data says (or reloaded when resuming). `resume`: see
    `workbench.run.Run` (True, False or "auto").

    Returns:
        PretrainResult with the trained (best-validation) model, its tokenizer, the History and
        the headline metrics also written to out_dir/metrics.json. Under torchrun with
        parallel="fsdp" the model holds only this rank's shard; `load_pretrained(out_dir)` gives
        the whole one. Interrupted (Ctrl-C), metrics["completed"] is False (final_step says where
        it stopped) and nothing final is written; resume=True continues the run.
    """
    config = replace(config, data=replace(config.data, corpus=corpus_spec(config.data.corpus)))  # absolute
    run = Run(out_dir, resume, kind="pretrain")
    device = setup_device(config.train, run.dist)
    corpus = load_corpus(config.data.corpus, text_column=config.data.text_column)
    if run.saved is not None:
        run.check_same("config", {"data": asdict(config.data), "model": asdict(config.model)},
                       ignore=("model.vocab_size", "model.split_qkv"))  # split_qkv: the same weights
        tokenizer = run.saved.artifact("tokenizer", tokenizer_from_dict)
    elif tokenizer is None:  # BPE from the training text, a char vocabulary from the whole corpus (as nanoGPT's)
        tokenizer = train_corpus_tokenizer(config.data.tokenizer, corpus, config.data.vocab_size)
    config = replace(config, model=replace(config.model, vocab_size=tokenizer.vocab_size))
    splits = encode_on_rank0(corpus, tokenizer, run.dist)
    T, tc, world = config.model.block_size, config.train, run.dist.world_size
    if run.dist.is_main:
        documents = f"{len(corpus.documents)} document{'s' * (len(corpus.documents) != 1)}"
        log.info("corpus %s (%s): train %s tokens, val %s (%s tokenizer, vocabulary %d)", corpus.name, documents,
                 f"{len(splits['train']):,}", f"{len(splits['val']):,}", tokenizer.kind, tokenizer.vocab_size)
    for name in ("train", "val"):
        if len(splits[name]) <= T:
            raise ValueError(f"the {name} split has {len(splits[name])} tokens, fewer than block_size+1={T + 1}; "
                             f"lower --block-size or use a larger corpus")

    torch.manual_seed(tc.seed)
    model = GPT(config.model)
    train_data = splits["train"]

    def next_batch(generator: torch.Generator):
        # every rank draws the same global batch and keeps its own slice of it
        return rank_slice(get_batch(train_data, T, tc.batch_size * world, generator, device=device), run.dist)

    evaluate = lm_evaluator(splits["val"], T, tc.batch_size * world * 4, tc.eval_iters, device, seed=tc.seed)
    artifacts = {"config": asdict(config), "tokenizer": tokenizer.to_dict()}
    trainer = Trainer(model, tc.resolved(len(train_data) // T), next_batch, evaluate, run_dir=run.out,
                      artifacts=artifacts, callbacks=callbacks, progress=progress, dist=run.dist, device=device)
    completed = run.fit(trainer)
    val_loss = trainer.best
    if completed and (tc.eval_iters is not None or trainer.compute_dtype == "bfloat16"):
        # training evaluated a sample (or under bf16 autocast): report the whole split in fp32, the
        # number `evaluate` and notebook 04 give for the same model (evaluate.heldout_loss)
        val_loss = heldout_loss(model, splits["val"], batch_size=tc.batch_size * 4, device=device)
    metrics = {**run.base_metrics(trainer), "val_loss": val_loss, "best_monitored_val_loss": trainer.best,
               "params": model.num_params(),
               "flops_per_token": model.flops_per_token(), "corpus": corpus.name, "tokenizer": tokenizer.kind,
               "vocab_size": tokenizer.vocab_size, "train_tokens": int(len(train_data)),
               "val_tokens": int(len(splits["val"]))}
    if run.dist.enabled:
        metrics |= {"world_size": world, "parallel": tc.parallel}
    if completed:
        run.finish(trainer, artifacts, metrics)
    return PretrainResult(model, tokenizer, config, trainer.history, metrics, run.out)


def encode_on_rank0(corpus, tokenizer: Tokenizer, dist) -> dict[str, np.ndarray]:
    """`data.encode_splits`; under torchrun rank 0 encodes and caches, then the other ranks read the cache."""
    if not dist.is_main:
        barrier(dist)
    splits = encode_splits(corpus, tokenizer)
    if dist.is_main:
        barrier(dist)
    return splits


def load_pretrained(path: str | Path, device: str = "cpu") -> tuple[GPT, Tokenizer, RunConfig]:
    """Load a GPT, its tokenizer and RunConfig from a run directory or checkpoint directory.

    A run directory gives its final (best-validation) model, model/; a run that did not finish has
    none and gives its latest step checkpoint's weights instead, with a warning (resume it to finish).
    """
    hint = "point at a pretraining run's --out"
    c = load_final(path, ("config", "tokenizer"), hint, "python -m workbench pretrain --out DIR", kind="pretrain")
    config = c.artifact("config", RunConfig.from_dict)  # a JSON of the wrong shape: one line naming the file
    tokenizer = c.artifact("tokenizer", tokenizer_from_dict)
    if tokenizer.vocab_size != config.model.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the model expects "
                         f"{config.model.vocab_size}; use the tokenizer.json saved with this checkpoint")
    model = GPT(config.model)
    c.load_weights(model)
    if c.path.resolve() != Path(path).resolve() and c.path.parent.resolve() != Path(path).resolve():
        # neither `path` itself nor its model/: load_final fell back to the run's latest step checkpoint
        warnings.warn(f"{path} has no final model (model/): the run did not finish; loaded its latest step "
                      f"checkpoint, {c.path.name}, with the weights of step {c.state.get('step', '?')} (not "
                      f"necessarily the best-validation ones a finished run keeps); resume the run to finish it "
                      f"(python -m workbench pretrain --out {path} --resume)", stacklevel=2)
    return model.to(device).eval(), tokenizer, config


def run_metrics(path: str | Path) -> dict[str, Any]:
    """The headline figures a finished pretraining run wrote to `path`/metrics.json. Its val_loss is
    the whole validation split scored in fp32 when training ended, the number `evaluate.split_loss`
    gives for the run's final weights (so notebook 04 reads it rather than scoring the split again)."""
    return read_json(Path(path) / "metrics.json")


# ------------------------------------------------------------ notebook helpers
def probe_step_time(config: RunConfig, tokenizer: Tokenizer, steps: int = 10) -> float:
    """Median seconds per optimizer step of `config`, measured over `steps` steps on the real data
    (after two warm-up steps). Used to estimate a long training cell's duration before running it."""
    corpus = load_corpus(config.data.corpus, text_column=config.data.text_column)
    data = encode_splits(corpus, tokenizer)["train"]
    T, tc = config.model.block_size, config.train
    device = resolve_device(tc.device)
    model = GPT(replace(config.model, vocab_size=tokenizer.vocab_size))
    times = time_steps(model, tc, lambda g: get_batch(data, T, tc.batch_size, g, device=device), steps + 2, device)
    return float(np.median(times[2:]))


def training_plan(config: RunConfig, tokenizer: Tokenizer, step_s: float,
                  metrics: dict[str, Any] | None = None) -> pd.DataFrame:
    """A run's size and cost before it starts, and (given its metrics) beside what the run measured.

    Args:
        config: the run's RunConfig (its model takes the tokenizer's vocabulary size).
        tokenizer: the tokenizer it trains with.
        step_s: seconds per optimizer step, as `probe_step_time` measured them.
        metrics: `PretrainResult.metrics` of the finished run, for a second column; None for the plan alone.
    Returns:
        one row per quantity (parameters, FLOPs per token, tokens per step, steps, ms per step, tokens
        per second, training time, wall time) and a column `estimate`, plus `run` when `metrics` is
        given (tokens per step there counts every process's share); object columns holding Python
        ints and floats, NaN where a column has no such figure (the estimate has no wall time:
        evaluations, sampling and saving are not probed). `notebook.table` shows it.
    """
    import pandas as pd

    if step_s <= 0:
        raise ValueError(f"step_s must be > 0 seconds, got {step_s}; pass probe_step_time(config, tokenizer)")
    if config.train.max_iters is None:
        raise ValueError("config.train.max_iters is None (the run is set in epochs); set max_iters to plan its steps")
    with torch.device("meta"):  # shapes only: counting needs no memory for the weights
        model = GPT(replace(config.model, vocab_size=tokenizer.vocab_size))
    tc = config.train
    tokens_per_step = tc.batch_size * tc.grad_accum * config.model.block_size
    nan = float("nan")
    estimate = {"parameters": model.num_params(), "FLOPs per token (train)": int(model.flops_per_token()),
                "tokens per step": tokens_per_step, "steps": tc.max_iters, "ms per step": step_s * 1000,
                "tokens per second": tokens_per_step / step_s, "training time (s)": step_s * tc.max_iters,
                "wall time, with evaluations (s)": nan}
    frame = pd.DataFrame({"estimate": pd.Series(estimate, dtype=object)})
    frame.index.name = "quantity"
    if metrics is not None:
        m = metrics
        run = [m.get("params", nan), m.get("flops_per_token", nan), tokens_per_step * m.get("world_size", 1),
               m.get("final_step", nan),
               m.get("ms_per_iter_median", nan), m.get("tokens_per_s", nan), m.get("train_s", nan), m.get("wall_s", nan)]
        frame["run"] = pd.Series(run, index=frame.index, dtype=object)
    return frame


class TextSamples:
    """Trainer callback: a sample from a fixed prompt and seed before training (step 0, the untrained
    model: noise to compare the rest with) and at every evaluation. A resumed run starts at the step
    it resumes from, as `AttentionSnapshots` does."""

    def __init__(self, tokenizer: Tokenizer, prompt: str = "\n", max_new_tokens: int = 120, seed: int = 0,
                 temperature: float = 0.8):
        self.tokenizer, self.prompt, self.n, self.seed, self.temperature = tokenizer, prompt, max_new_tokens, seed, temperature
        self.samples: list[dict] = []

    def sample(self, trainer: Trainer, val_loss: float | None) -> None:
        idx = torch.tensor([self.tokenizer.encode(self.prompt)], device=trainer.device)
        # its own seeded generator: the training batches' random stream is untouched
        out = trainer.model.generate(idx, self.n, temperature=self.temperature, top_k=50, seed=self.seed)
        self.samples.append({"step": trainer.step, "val_loss": val_loss, "text": self.tokenizer.decode(out[0].tolist())})

    def on_fit_start(self, trainer: Trainer, step: int) -> None:
        if self.samples and self.samples[-1]["step"] == step:  # fit() in chunks: once a step
            return
        if trainer.parallel.sharded:
            # FSDP sets itself up on the model's first forward. Inside generate's inference_mode that
            # state would be inference tensors, which training may not update in place: run the
            # first forward here, under no_grad and in eval mode (no dropout draws from the RNG).
            with torch.no_grad(), eval_mode(trainer.model):
                trainer.model(torch.tensor([self.tokenizer.encode(self.prompt)], device=trainer.device))
        self.sample(trainer, None)  # no evaluation before the first step

    def on_eval(self, trainer: Trainer, record: dict) -> None:
        self.sample(trainer, record.get("val_loss"))

    @property
    def df(self):
        import pandas as pd
        return pd.DataFrame(self.samples, columns=["step", "val_loss", "text"])


class AttentionSnapshots:
    """Trainer callback: attention of a fixed probe text before training (step 0, the untrained
    model) and at every evaluation. A resumed run starts at the step it resumes from (a finished run
    run again, as a notebook cell may be: its final weights, the one snapshot there is)."""

    def __init__(self, tokenizer: Tokenizer, text: str):
        self.tokenizer, self.text = tokenizer, text
        self.snapshots: list[tuple[int, Any]] = []  # (step, capture.AttentionResult)

    def capture(self, model, step: int) -> None:
        from .capture import gpt_attention

        self.snapshots.append((step, gpt_attention(model, self.tokenizer, self.text)))  # it restores model.training

    def on_fit_start(self, trainer: Trainer, step: int) -> None:
        if not self.snapshots or self.snapshots[-1][0] != step:  # fit() in chunks: once a step
            self.capture(trainer.model, step)

    def on_eval(self, trainer: Trainer, record: dict) -> None:
        self.capture(trainer.model, trainer.step)

    def frames(self, layer: int, head: int) -> list[tuple[int, torch.Tensor]]:
        """(step, weights (T, T)) of one head over training, for viz.attention_over_checkpoints."""
        return [(step, result.head(layer, head)) for step, result in self.snapshots]  # head(): range checked

    @property
    def tokens(self) -> list[str]:
        return self.snapshots[-1][1].tokens if self.snapshots else []


class WeightSnapshots:
    """Trainer callback: keep the weights at chosen steps, for looking at how training got there.

    Step checkpoints keep only the newest two (`checkpoint.prune_steps`); this writes the weights
    alone (a few MB for a small GPT, no optimizer state) to `folder/step-NNNNNNN/model.safetensors`
    every `every` steps. It runs on logging steps, so `every` should be a multiple of the run's
    log_interval; `interpret.snapshot_steps(folder)` lists them. Single process only (under FSDP
    the model holds a shard).
    """

    def __init__(self, folder: str | Path, every: int):
        if every < 1:
            raise ValueError(f"every must be >= 1 step, got {every}")
        self.folder, self.every = Path(folder), every

    def save(self, model, step: int) -> Path:
        from .checkpoint import save_checkpoint

        return save_checkpoint(self.folder / f"step-{step:07d}", model)

    def on_step(self, trainer: Trainer, record: dict) -> None:
        if trainer.dist.is_main and trainer.step % self.every == 0:
            self.save(trainer.model, trainer.step)


def non_embedding_params(model: GPT) -> int:
    """Parameters without the token and position embeddings, the N of Kaplan et al. (2020).

    wte is tied to lm_head and counted once; an untied lm_head is a vocabulary matrix too and
    is left out with it. Fixed tables (sinusoidal, RoPE) are buffers, not parameters.
    """
    n = model.num_params(exclude_position=True) - model.transformer.wte.weight.numel()
    if model.lm_head.weight is not model.transformer.wte.weight:
        n -= model.lm_head.weight.numel()
    return n


def scaling_sweep(base: RunConfig, tokenizer: Tokenizer, n_embd: list[int], n_layer: int, n_head: int,
                  max_iters: int) -> pd.DataFrame:
    """Train one model per width with the same data, budget and seed; val loss against parameters.

    Returns:
        one row per width: n_embd, n_layer, params (all, tied weights once), non_embedding_params
        (without wte/wpe, as scaling-law studies count), val_loss, train_s, shape.
    """
    import pandas as pd

    rows = []
    for width in n_embd:
        cfg = replace(base, model=replace(base.model, n_embd=width, n_layer=n_layer, n_head=n_head),
                      train=replace(base.train, max_iters=max_iters, eval_interval=max_iters,
                                    warmup_iters=max(1, max_iters // 10)))
        result = pretrain(cfg, tokenizer=tokenizer, progress=False)
        rows.append({"n_embd": width, "n_layer": n_layer, "params": result.metrics["params"],
                     "non_embedding_params": non_embedding_params(result.model),
                     "val_loss": result.metrics["val_loss"], "train_s": result.metrics.get("train_s"),
                     "shape": f"{n_layer}x{width}"})
    return pd.DataFrame(rows)
