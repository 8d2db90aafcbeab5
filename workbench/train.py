"""One training loop for pretraining and fine-tuning.

`Trainer` knows nothing about GPT: it needs a model whose `forward(*batch)` returns
`(output, loss)`, a function that draws the next training batch from a
`torch.Generator`, and a function that evaluates the model. Around that it does the loop:
AdamW (weight decay on matrices only), linear warmup + cosine decay, gradient accumulation
and clipping, bf16 autocast on CUDA and on CPUs with fast bf16 matmuls, periodic evaluation,
early stopping with best-weights restore, resumable checkpoints, callbacks for live figures, a
progress bar, a `History` of every metric, and on request the whole step replayed as one CUDA graph
(`StepGraph`). How the model is spread over torchrun ranks (DDP, FSDP2) or compiled is
`workbench.distributed.Parallel`'s business; the checkpoint layout is `workbench.checkpoint`'s;
a run's directory, resume and Ctrl-C are `workbench.run`'s.

Resume is exact: the step, optimizer moments, every RNG state and the data sampler's
generator (its "position") are checkpointed, so k steps + resume + (N-k) steps gives
the same weights as N straight steps (tests/test_train.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistInfo, Parallel, barrier, mean_across_ranks

log = logging.getLogger(__name__)

Batch = tuple  # positional inputs of model.forward: the token ids first, the targets last


class NonFiniteLossError(ValueError):
    """Training produced a NaN or infinite loss."""


class Callback(Protocol):
    """Any object with some of these methods; missing ones are skipped."""

    def on_fit_start(self, trainer: "Trainer", step: int) -> None: ...  # before fit()'s first step (or none)
    def on_step(self, trainer: "Trainer", record: dict) -> None: ...
    def on_eval(self, trainer: "Trainer", record: dict) -> None: ...
    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None: ...


class History:
    """Every logged metric, one dict per record; `.df` gives them as a pandas DataFrame."""

    def __init__(self, records: Iterable[dict] = ()):
        self.records: list[dict] = list(records)

    def log(self, **metrics: Any) -> dict:
        self.records.append(metrics)
        return metrics

    @property
    def df(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.records)

    def evals(self) -> pd.DataFrame:
        """Only the evaluation records (rows that carry a validation metric)."""
        df = self.df
        cols = [c for c in df.columns if c.startswith("val_")]
        return df.dropna(subset=cols, how="all") if cols else df.iloc[0:0]

    def __len__(self) -> int:
        return len(self.records)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


# bf16 autocast on a CPU only where its bf16 matmuls run at least this many times faster than fp32:
# 3-6x with AMX (measured on a Xeon at the workbench's sizes), ~2.8x at large sizes with AVX-512 BF16
# alone, well under 1x without native bf16 (emulated); casts and the fp32 attention eat part of the gain.
BF16_MIN_SPEEDUP = 2.0


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(repeats: int = 5) -> float:
    """How many times faster this CPU multiplies bf16 matrices than fp32 ones, at the workbench's model
    sizes (a 1024 x 256 by 256 x 1024 matmul, best of `repeats` each, taken in alternation, on the
    current thread count). Measured once per process (~50 ms), with a generator of its own: drawing from
    torch's global one would change the first seeded run of a process and not the next ones."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(1024, 256, generator=generator), torch.randn(256, 1024, generator=generator)
    pairs = {torch.float32: (a, b), torch.bfloat16: (a.bfloat16(), b.bfloat16())}
    best = {dtype: math.inf for dtype in pairs}
    for _ in range(repeats + 1):  # the first round warms up
        for dtype, (x, y) in pairs.items():
            t0 = time.perf_counter_ns()
            x @ y
            best[dtype] = min(best[dtype], time.perf_counter_ns() - t0)
    return best[torch.float32] / best[torch.bfloat16]


# Set to "1" or "0", it decides "auto" on a CPU instead of the timing: the report runner decides once
# and sets it for its notebooks, since a machine whose speedup measures near BF16_MIN_SPEEDUP (a 2-core
# Xeon: 2.02-2.59) would otherwise let each notebook's kernel decide on its own.
CPU_BF16_ENV = "WORKBENCH_CPU_BF16"


def cpu_uses_bf16() -> bool:
    """Whether "auto" means bf16 autocast on this CPU: WORKBENCH_CPU_BF16 ("1"/"0") when set, else
    whether its bf16 matmuls measure at least BF16_MIN_SPEEDUP times faster than fp32."""
    given = os.environ.get(CPU_BF16_ENV)
    if given in ("0", "1"):
        return given == "1"
    return cpu_bf16_speedup() >= BF16_MIN_SPEEDUP


def cpu_dtype_environ() -> dict[str, str]:
    """The environment under which another process (a notebook's kernel, a resumed run) decides "auto"
    on a CPU as this one did (`CPU_BF16_ENV`): processes timing it each on their own could train in
    bf16 and fp32 where the speedup measures near the threshold. Empty with a GPU."""
    return {} if torch.cuda.is_available() else {CPU_BF16_ENV: "1" if cpu_uses_bf16() else "0"}


def uses_bf16(device: torch.device, dtype: str) -> bool:
    """Whether training and evaluation run under bf16 autocast. "auto": on CUDA, and on a CPU whose
    bf16 matmuls measure at least BF16_MIN_SPEEDUP times faster than fp32 (`cpu_uses_bf16`)."""
    if dtype != "auto":
        return dtype == "bfloat16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_uses_bf16())


def autocast_context(device: torch.device, dtype: str):
    """bf16 autocast (fp32 weights, bf16 matmuls) where `uses_bf16`; nothing otherwise."""
    if uses_bf16(device, dtype):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to lr over warmup_iters, cosine decay to min_lr at decay_iters, then min_lr."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    if step >= cfg.decay_iters:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / max(1, cfg.decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                   param_groups: list[dict] | None = None, capturable: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only: not on biases, norms or 1-d gains.

    `param_groups` (optional) is a list of {"params": [...], "lr_scale": float}: each group's
    learning rate is the schedule's value times its lr_scale (fine-tuning: a head faster than the
    backbone, layer-wise decay). Parameters that do not require grad are left out either way.
    `capturable`: its step can be recorded in a CUDA graph (`StepGraph`).
    """
    if param_groups is None:
        param_groups = [{"params": list(model.parameters()), "lr_scale": 1.0}]
    groups = []
    for g in param_groups:
        params = [p for p in g["params"] if p.requires_grad]
        scale = float(g.get("lr_scale", 1.0))
        groups += [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr_scale": scale},
                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr_scale": scale}]
    if len(param_groups) > 1:
        groups = [g for g in groups if g["params"]]
    # The fused kernel is one pass over all parameters; PyTorch has it for CPU and CUDA.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type in ("cuda", "cpu"), capturable=capturable)


def graph_problem(device: torch.device, dist: DistInfo) -> str | None:
    """Why the training step cannot be replayed as one CUDA graph (`StepGraph`) here, as a one-line
    error naming the fix; None when it can. (Dropout is fine: each replay draws new masks, as the
    CUDA generator advances by the whole graph's draws.)"""
    if device.type != "cuda":
        return f"cuda_graph needs a CUDA GPU, not {device.type}; drop --cuda-graph"
    if dist.enabled:
        return "cuda_graph runs in one process, not under torchrun; drop --cuda-graph"
    return None


class Trainer:
    """Train `model` on batches from `next_batch`, evaluating with `evaluate`.

    Args:
        model: forward(*batch) -> (output, loss).
        config: the loop's TrainConfig (derived fields are filled by `config.resolved()`).
        next_batch: generator -> Batch on the right device; all training randomness in the
            data comes from that generator, which is checkpointed.
        evaluate: model -> {"val_loss": ..., ...}; run under no_grad in eval mode.
        run_dir: where step checkpoints go (None: nothing is written).
        artifacts: name -> JSON-able object written beside every checkpoint (config, tokenizer).
        monitor, mode: the metric early stopping and "best" follow, "min" or "max".
        callbacks: objects with on_fit_start / on_step / on_eval / on_checkpoint methods.
        progress: show a progress bar.
        param_groups: optional [{"params": [...], "lr_scale": s}, ...]; each group trains at the
            schedule's lr times s (see `make_optimizer`). Default: one group, scale 1.
        dist: the process group (`workbench.distributed.dist_info()`); with several ranks only rank 0
            writes checkpoints or shows progress.
        device: overrides config.device (e.g. cuda:<local rank>).
        count_tokens: Batch -> tokens read by the model, for tokens/s (default: batch[0].numel()).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, next_batch: Callable[[torch.Generator], Batch],
                 evaluate: Callable[[torch.nn.Module], dict[str, float]], run_dir: str | Path | None = None,
                 artifacts: dict[str, Any] | None = None, monitor: str = "val_loss", mode: str = "min",
                 callbacks: Iterable[Callback] = (), progress: bool = True, param_groups: list[dict] | None = None,
                 dist: DistInfo | None = None, device: torch.device | None = None,
                 count_tokens: Callable[[Batch], int] | None = None):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.config = config = config.resolved()
        self.dist = dist or DistInfo()
        self.device = device or resolve_device(config.device)
        self.model, self.next_batch, self.evaluate_fn = model.to(self.device), next_batch, evaluate
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.artifacts = artifacts or {}
        self.monitor, self.mode = monitor, mode
        self.callbacks = list(callbacks)
        self.progress = progress and self.dist.is_main
        self.count_tokens = count_tokens or (lambda batch: batch[0].numel())
        # FSDP shards the parameters in place, so the optimizer is built afterwards, on the shards
        self.parallel = Parallel(self.model, self.dist, self.device, config.parallel, config.compile)
        # the dtype steps and evaluations run in (config.dtype "auto" decided here); every rank the same
        bf16 = torch.tensor(float(uses_bf16(self.device, config.dtype)), device=self.device)
        self.compute_dtype = "bfloat16" if mean_across_ranks(bf16, self.dist).item() == 1.0 else "float32"
        if config.cuda_graph and (problem := graph_problem(self.device, self.dist)):
            raise ValueError(problem)
        self.optimizer = make_optimizer(self.model, config, self.device, param_groups, capturable=config.cuda_graph)
        self.step_graph = StepGraph(self) if config.cuda_graph else None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history = History()
        self.step = 0
        self.best: float | None = None
        self.best_step: int | None = None
        self.evals_since_best = 0
        self.finished = False  # fit() reached max_iters or stopped early (not paused, not interrupted)
        self.stop_requested = False  # see request_stop
        self._saved_step: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None  # FSDP: on rank 0 ({} on the others)
        # Seconds and tokens per optimizer step, this session. The device is synchronised only on logging
        # steps (reading the loss), so each step between two of them is charged the window's average.
        self.step_times: list[float] = []
        self.step_tokens: list[int] = []
        self._window: list[float] = []  # start times of the steps since the last logging step

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {"step": self.step, "best": self.best, "best_step": self.best_step,
                "evals_since_best": self.evals_since_best, "monitor": self.monitor, "mode": self.mode,
                "param_groups": self.optimizer.state_dict()["param_groups"], "compute_dtype": self.compute_dtype}

    def save(self) -> Path | None:
        """Write a resumable checkpoint of the current step (and the best weights so far)."""
        self._saved_step = self.step
        path = None
        if self.run_dir is not None:
            weights = self.parallel.whole_state()  # a sharded model and optimizer are gathered by every rank ...
            optimizer = self.parallel.optimizer_state(self.optimizer)
            if self.dist.is_main:  # ... and written by rank 0
                path = ckpt.save_step(self.run_dir, self.step, self.model, optimizer, self.generator, self.state(),
                                      self.history.records, self.artifacts, weights, self._best_state)
        barrier(self.dist)  # the other ranks wait until the checkpoint is complete
        if path is not None:
            self._call("on_checkpoint", path)
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load the latest checkpoint of run_dir (or `path`); False when there is none."""
        path = path or (self.run_dir and ckpt.latest_checkpoint(self.run_dir))
        if not path:
            return False
        c = ckpt.load_checkpoint(path)
        self.parallel.load_state(c.state_dict(self.model))  # under FSDP every rank keeps its shard
        self.parallel.load_optimizer_state(self.optimizer, c.optimizer_state())
        for group in self.optimizer.param_groups:  # as this run steps, whatever the run that saved it did
            group["capturable"] = self.config.cuda_graph
        if self.step_graph is not None:  # the optimizer's state tensors are new: record the step anew
            self.step_graph = StepGraph(self)
        c.restore_rng(self.generator)
        self.step = c.state["step"]
        self.best, self.best_step = c.state["best"], c.state["best_step"]
        self.evals_since_best = c.state["evals_since_best"]
        if self.config.dtype == "auto" and c.state.get("compute_dtype"):
            # "auto" was decided when the run started (on a CPU, by a timing that can fall either side of
            # its threshold from one process to the next): the rest of the run trains as it began
            self.compute_dtype = c.state["compute_dtype"]
        self.history = History(c.history)
        self._best_state = c.best_state(self.model)
        log.info("resumed from %s at step %d", c.path, self.step)
        return True

    # ---------------------------------------------------------------- loop
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with autocast_context(self.device, self.compute_dtype):
            metrics = self.evaluate_fn(self.model)
        self.model.train()
        return {k: float(v) for k, v in metrics.items()}

    def fit(self, until: int | None = None) -> History:
        """Train until max_iters or early stopping; restore the best weights; return the History.

        `until` pauses after that step instead (the schedule still runs to max_iters), so a notebook
        can train in chunks; a later `fit()` carries on. `request_stop()` (what Ctrl-C does under
        `workbench.run.stop_on_sigint`) stops cleanly after the current step: a checkpoint of that
        step is written and the history so far returned, so a resume continues exactly.
        """
        cfg = self.config
        stop_at = min(until, cfg.max_iters) if until is not None else cfg.max_iters
        self.model.train()
        self._window = []  # time spent outside fit() (a pause, a notebook cell) is not a step's
        self.stop_requested = False
        # `disable` only when asked: passing it always would override TQDM_DISABLE=1 in the environment
        bar = tqdm(total=cfg.max_iters, initial=self.step, desc="train", dynamic_ncols=True,
                   **({} if self.progress else {"disable": True}))
        self._call("on_fit_start", self.step)  # e.g. the untrained model's attention, at step 0
        try:  # (a resumed run that had stopped early trains no further)
            while self.step < stop_at and not self.stopped_early:
                record = self._train_step()
                bar.update(1)
                if record is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                if self._is_eval_step() and self._eval_and_checkpoint():
                    break  # stopped early
                if self._should_stop(record is not None):
                    if self.dist.is_main:  # (Run's warning then says how to continue)
                        log.info("stopped at step %d; saving a checkpoint", self.step)
                    if self._saved_step != self.step:  # (an evaluation step may have saved it)
                        self.save()
                    return self.history
        finally:
            bar.close()
        self.finished = self.stopped_early or self.step >= cfg.max_iters
        if self._best_state is not None and self.finished:
            self.parallel.load_state(self._best_state)
        return self.history

    @property
    def stopped_early(self) -> bool:
        """The last `patience` evaluations brought no improvement (so fit() stops, or has stopped)."""
        return self.config.patience is not None and self.evals_since_best >= self.config.patience

    def request_stop(self) -> None:
        """Stop `fit()` after the current step, with a checkpoint (what Ctrl-C does; for callbacks, widgets)."""
        self.stop_requested = True

    def _should_stop(self, synced: bool) -> bool:
        """Whether a stop was requested; under torchrun every rank must agree, so the ranks decide
        together at logging steps, where they synchronise anyway."""
        if not self.dist.enabled:
            return self.stop_requested
        if not synced:
            return False
        flag = torch.tensor(float(self.stop_requested), device=self.device)
        return bool(self.parallel.mean(flag).item() > 0)

    def _train_step(self) -> dict | None:
        cfg = self.config
        self._window.append(time.perf_counter())
        lr = lr_at(self.step, cfg)
        batches = [self.next_batch(self.generator) for _ in range(cfg.grad_accum)]
        if self.step_graph is not None:
            loss_sum, grad_norm = self.step_graph(batches, lr)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss_sum, grad_norm = self._step(batches)
            self.optimizer.zero_grad(set_to_none=True)
        tokens = sum(self.count_tokens(batch) for batch in batches) * self.dist.world_size  # the global batch
        self.step += 1
        self.step_tokens.append(tokens)
        if self.step % cfg.log_interval and not self._is_eval_step():  # the device may still be working: no time is taken until it is synchronised
            return None
        loss_value = self.parallel.mean(loss_sum / cfg.grad_accum).item()  # syncs the device: only on logging steps
        n = len(self._window)
        dt = (time.perf_counter() - self._window[0]) / n  # per step, over the window
        self.step_times += [dt] * n
        self._window = []
        if not math.isfinite(loss_value):
            last = ckpt.latest_checkpoint(self.run_dir) if self.run_dir else None
            raise NonFiniteLossError(
                f"loss became {loss_value} at step {self.step} (lr {lr:.2e}); lower --lr or raise "
                f"--warmup-iters and resume; last good checkpoint: {last or 'none written yet'}")
        record = self.history.log(step=self.step, loss=loss_value, lr=lr, ms_per_iter=dt * 1000,
                                  tokens_per_s=sum(self.step_tokens[-n:]) / (n * dt),
                                  grad_norm=float(grad_norm) if grad_norm is not None else float("nan"))
        self._call("on_step", record)
        return record

    def _step(self, batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward and backward of every micro-batch, clipping, the optimizer's step; returns the sum of the
        micro-batches' losses and the gradient norm (None without clipping), both on the device."""
        loss_sum = 0.0
        for micro, batch in enumerate(batches):
            with self.parallel.gradient_sync(last=micro == len(batches) - 1):
                with autocast_context(self.device, self.compute_dtype):
                    _, loss = self.parallel.forward(*batch)
                (loss / len(batches)).backward()
            loss_sum = loss_sum + loss.detach()
        grad_norm = self.parallel.clip_grad_norm(self.config.grad_clip) if self.config.grad_clip > 0 else None
        self.optimizer.step()
        return loss_sum, grad_norm

    def _is_eval_step(self) -> bool:
        """Evaluation follows every eval_interval-th step and the last one (they are logging steps too)."""
        return self.step % self.config.eval_interval == 0 or self.step == self.config.max_iters

    def _eval_and_checkpoint(self) -> bool:
        """Evaluate, track the best weights, checkpoint; True when early stopping triggers."""
        cfg = self.config
        metrics = self.evaluate()
        value = metrics[self.monitor]
        if not math.isfinite(value):
            raise NonFiniteLossError(f"{self.monitor} became {value} at step {self.step}; lower --lr and resume")
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.best_step, self.evals_since_best = value, self.step, 0
            self._best_state = self.parallel.copy_state()
        else:
            self.evals_since_best += 1
        record = self.history.log(step=self.step, **metrics, best=self.best)
        self._call("on_eval", record)
        stop = self.stopped_early
        due = cfg.checkpoint_interval is None or self.step % cfg.checkpoint_interval == 0
        if due or stop or self.step == cfg.max_iters:
            self.save()
        if stop:
            log.info("early stopping at step %d: no %s improvement in %d evaluations", self.step,
                     self.monitor, cfg.patience)
        return stop

    def _call(self, name: str, arg) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(self, arg)

    def summary(self) -> dict[str, float]:
        """Speed figures of this session's steps (the first 10% are warm-up and left out)."""
        skip = len(self.step_times) // 10
        times = self.step_times[skip:] or self.step_times
        if not times:
            return {}
        median = statistics.median(times)
        tokens = self.step_tokens[skip:] or self.step_tokens
        return {"ms_per_iter_median": median * 1000, "tokens_per_s": statistics.fmean(tokens) / median,
                "train_s": sum(self.step_times)}


class StepGraph:
    """The Trainer's step recorded once as a CUDA graph and replayed: one launch instead of hundreds.

    A compiled step of GPT-2 124M still launches ~570 kernels, ~15 ms of the host's time for a ~27 ms
    step (`bench --step-profile`), close to where the host sets the pace; as one graph the step took
    1.6% less on an H200, 3.1-3.4% with q, k, v from three matmuls (BENCHMARKS.md). Here the first `warmup`
    steps run eagerly on a side stream (compilation, the optimizer's lazily created state and the
    libraries' workspaces happen there, as PyTorch's CUDA graph docs require); the next step is
    captured whole — every micro-batch's forward and backward, clipping and fused AdamW (`capturable`,
    its learning rate a tensor each step fills) — and every step from then on copies its batches into
    the graph's input tensors and replays it. So all batches must have one shape (`finetune` and
    `seq2seq_train` then pad theirs to the split's longest example instead of each batch's), and the
    gradients stay in the graph's memory (never set to None). Dropout draws new masks at every
    replay. After `Trainer.resume` loads new optimizer state the Trainer makes a new StepGraph, which
    records the step anew.
    """

    WARMUP = 3  # eager steps before the capture

    def __init__(self, trainer: "Trainer", warmup: int = WARMUP):
        self.trainer, self.warmup = trainer, warmup
        self.eager_steps = 0
        self.replays = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[Batch] = []  # the captured step's batches: each step's are copied in
        self.outputs: tuple[torch.Tensor, torch.Tensor | None] | None = None
        for group in trainer.optimizer.param_groups:  # a tensor, so the graph reads each step's value
            group["lr"] = torch.tensor(float(group["lr"]), device=trainer.device)

    def __call__(self, batches: list[Batch], lr: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step at learning rate `lr` (times each group's lr_scale); returns `Trainer._step`'s
        (loss sum, gradient norm). After capture they live in the graph's memory: read them before the next step."""
        t = self.trainer
        for group in t.optimizer.param_groups:
            group["lr"].fill_(lr * group.get("lr_scale", 1.0))
        if self.graph is None and self.eager_steps < self.warmup:
            self.eager_steps += 1
            side = torch.cuda.Stream(t.device)
            side.wait_stream(torch.cuda.current_stream(t.device))
            with torch.cuda.stream(side):
                out = t._step(batches)
                t.optimizer.zero_grad(set_to_none=True)
            torch.cuda.current_stream(t.device).wait_stream(side)
            return out
        if self.graph is None:
            self.inputs = [tuple(x.clone() for x in batch) for batch in batches]
            t.optimizer.zero_grad(set_to_none=True)  # the graph's backward writes the gradients afresh
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = t._step(self.inputs)
        else:
            for captured, batch in zip(self.inputs, batches):
                for into, x in zip(captured, batch, strict=True):
                    if into.shape != x.shape:
                        raise ValueError(f"cuda_graph replays batches of one shape; got {tuple(x.shape)} after "
                                         f"{tuple(into.shape)}: drop --cuda-graph for batches of varying shape")
                    into.copy_(x)
        self.graph.replay()
        self.replays += 1
        return self.outputs


def time_steps(model: torch.nn.Module, config: TrainConfig, next_batch: Callable[[torch.Generator], Batch],
               steps: int, device: torch.device | None = None) -> list[float]:
    """Seconds of each of `steps` optimizer steps of `model` on `next_batch` (no evaluation, nothing
    written): the step the Trainer runs, for benchmarks and time estimates. Steps between two logging
    steps (config.log_interval) share their window's average."""
    config = dataclasses.replace(config, max_iters=steps, epochs=None, eval_interval=steps, patience=None)
    trainer = Trainer(model, config, next_batch, lambda m: {"val_loss": 0.0}, progress=False, device=device)
    trainer.fit()
    return trainer.step_times
