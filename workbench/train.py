"""One training loop for pretraining and fine-tuning.

`Trainer` knows nothing about GPT: it needs a model whose `forward(*batch)` returns
`(output, loss)`, a function that draws the next training batch from a
`torch.Generator`, and a function that evaluates the model. Around that it does what
every run needs: AdamW (weight decay on matrices only), linear warmup + cosine decay,
gradient accumulation and clipping, bf16 autocast on CUDA, optional `torch.compile`,
periodic evaluation, early stopping with best-weights restore, resumable checkpoints,
callbacks for live figures, a progress bar, and a `History` of every metric. Under torchrun
it trains with DDP or, with `parallel="fsdp"`, FSDP2 (see `workbench.distributed`).

Resume is exact: the step, optimizer moments, every RNG state and the data sampler's
generator (its "position") are checkpointed, so k steps + resume + (N-k) steps gives
the same weights as N straight steps (tests/test_train.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import (DistInfo, barrier, full_tensor, gather_model_state, gather_optimizer_state,
                          load_model_state, load_optimizer_state, mean_across_ranks, shard_model)

log = logging.getLogger(__name__)

Batch = tuple  # positional inputs of model.forward, the last being the targets


class NonFiniteLossError(ValueError):
    """Training produced a NaN or infinite loss."""


class Callback(Protocol):
    """Any object with some of these methods; missing ones are skipped."""

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


def autocast_context(device: torch.device, dtype: str):
    """bf16 autocast on CUDA by default; fp32 elsewhere unless bfloat16 is asked for."""
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    if use_bf16:
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
                   param_groups: list[dict] | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only: not on biases, norms or 1-d gains.

    `param_groups` (optional) is a list of {"params": [...], "lr_scale": float}: each group's
    learning rate is the schedule's value times its lr_scale (fine-tuning: a head faster than the
    backbone, layer-wise decay). Parameters that do not require grad are left out either way.
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
                             fused=device.type in ("cuda", "cpu"))


class Trainer:
    """Train `model` on batches from `next_batch`, evaluating with `evaluate`.

    Args:
        model: forward(*batch) -> (output, loss).
        config: the loop's TrainConfig.
        next_batch: generator -> Batch on the right device; all training randomness in the
            data comes from that generator, which is checkpointed.
        evaluate: model -> {"val_loss": ..., ...}; run under no_grad in eval mode.
        run_dir: where checkpoints and the final model go (None: nothing is written).
        artifacts: name -> JSON-able object written beside every checkpoint (config, tokenizer).
        monitor, mode: the metric early stopping and "best" follow, "min" or "max".
        callbacks: objects with on_step / on_eval / on_checkpoint methods.
        progress: show a progress bar.
        param_groups: optional [{"params": [...], "lr_scale": s}, ...]; each group trains at the
            schedule's lr times s (see `make_optimizer`). Default: one group, scale 1.
        dist: the process group (workbench.distributed); with several ranks the model is wrapped in
            DistributedDataParallel, or sharded with FSDP2 when config.parallel is "fsdp" (in place:
            `model` then holds only this rank's shard), and only rank 0 writes checkpoints or shows
            progress.
        device: overrides config.device (e.g. cuda:<local rank>).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, next_batch: Callable[[torch.Generator], Batch],
                 evaluate: Callable[[torch.nn.Module], dict[str, float]], run_dir: str | Path | None = None,
                 artifacts: dict[str, Any] | None = None, monitor: str = "val_loss", mode: str = "min",
                 callbacks: Iterable[Any] = (), progress: bool = True, param_groups: list[dict] | None = None,
                 dist: DistInfo | None = None, device: torch.device | None = None):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.config = config
        self.dist = dist or DistInfo()
        self.device = device or resolve_device(config.device)
        self.model = model.to(self.device)
        self.next_batch = next_batch
        self.evaluate_fn = evaluate
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.artifacts = artifacts or {}
        self.monitor, self.mode = monitor, mode
        self.callbacks = list(callbacks)
        self.progress = progress and self.dist.is_main
        # FSDP shards the parameters in place; the optimizer must be built on the shards
        self.sharded = self.dist.enabled and config.parallel == "fsdp"
        if self.sharded:
            shard_model(self.model, self.device, self.dist)
        elif config.parallel == "fsdp":
            log.warning("parallel='fsdp' shards across torchrun ranks, but this is a single process: training "
                        "unsharded (launch with torchrun --nproc_per_node=N to shard)")
        self.optimizer = make_optimizer(self.model, config, self.device, param_groups)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history = History()
        self.step = 0
        self.best: float | None = None
        self.best_step: int | None = None
        self.evals_since_best = 0
        self.finished = False  # fit() reached max_iters or stopped early (not paused, not interrupted)
        self._stop_requested = False  # see request_stop
        self._saved_step: int | None = None
        # FSDP: a whole CPU copy on rank 0 and {} on the other ranks (see `weights`)
        self._best_state: dict[str, torch.Tensor] | None = None
        self._forward = self.model
        self._ddp: DistributedDataParallel | None = None
        if self.dist.enabled and not self.sharded:  # gradients are averaged across ranks during backward
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._forward = self._ddp = DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self._forward = torch.compile(self._forward)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 for the fp32 matmuls that autocast leaves
        # Seconds per optimizer step, this session. The device is synchronised only on logging steps
        # (reading the loss), so each step between two of them is charged the window's average.
        self.step_times: list[float] = []
        self._window: list[float] = []  # start times of the steps since the last logging step
        self.tokens_per_step = 0

    # ---------------------------------------------------------------- state
    def _is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "best": self.best, "best_step": self.best_step,
                "evals_since_best": self.evals_since_best, "monitor": self.monitor, "mode": self.mode,
                "param_groups": self.optimizer.state_dict()["param_groups"]}

    def weights(self) -> dict[str, torch.Tensor] | None:
        """The whole weights of a sharded model (CPU, on rank 0; {} on the other ranks), for
        `ckpt.save_checkpoint(..., weights=)`; None when `self.model` holds them whole.

        Under FSDP this is collective: every rank must call it.
        """
        return gather_model_state(self.model) if self.sharded else None

    def _copy_weights(self) -> dict[str, torch.Tensor]:
        if self.sharded:
            return gather_model_state(self.model)
        return {k: v.detach().clone() for k, v in ckpt._unwrap(self.model).state_dict().items()}

    def _load_weights(self, state: dict[str, torch.Tensor]) -> None:
        if self.sharded:
            load_model_state(self.model, state)  # rank 0's copy, sent to every rank's shard
        else:
            ckpt._unwrap(self.model).load_state_dict(state)

    def save(self) -> Path | None:
        """Write a resumable checkpoint of the current step (and the best weights so far)."""
        self._saved_step = self.step
        if self.run_dir is None:
            barrier(self.dist)
            return None
        # a sharded model and optimizer are gathered by every rank, then written by rank 0
        weights = self.weights()
        optimizer_state = gather_optimizer_state(self.model, self.optimizer) if self.sharded else self.optimizer
        if not self.dist.is_main:
            barrier(self.dist)
            return None
        tensors, _ = ckpt.optimizer_to_tensors(optimizer_state)
        tensors.update(ckpt.rng_tensors(self.generator))
        if self._best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self._best_state.items()})
        path = ckpt.save_checkpoint(ckpt.step_checkpoint_path(self.run_dir, self.step), self.model,
                                    self.artifacts, self.state(), self.history.records, tensors, weights)
        ckpt.mark_latest(self.run_dir, path)
        barrier(self.dist)  # the other ranks wait until the checkpoint is complete
        self._call("on_checkpoint", path)
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load the latest checkpoint of run_dir (or `path`); False when there is none."""
        path = path or (self.run_dir and ckpt.latest_checkpoint(self.run_dir))
        if not path:
            return False
        c = ckpt.load_checkpoint(path)
        optimizer_state = ckpt.optimizer_from_tensors(c.tensors, c.state["param_groups"])
        if self.sharded:  # every rank reads the whole checkpoint and keeps its shard
            load_model_state(self.model, c.state_dict(self.model))
            load_optimizer_state(self.model, self.optimizer, optimizer_state)
        else:
            c.load_weights(ckpt._unwrap(self.model))
            self.optimizer.load_state_dict(optimizer_state)
        ckpt.restore_rng(c.tensors, self.generator)
        self.step = c.state["step"]
        self.best, self.best_step = c.state["best"], c.state["best_step"]
        self.evals_since_best = c.state["evals_since_best"]
        self.history = History(c.history)
        best = {k[len("best."):]: v for k, v in c.tensors.items() if k.startswith("best.")}
        self._best_state = best or None
        log.info("resumed from %s at step %d", c.path, self.step)
        return True

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with autocast_context(self.device, self.config.dtype):
            metrics = self.evaluate_fn(self.model)
        self.model.train()
        return {k: float(v) for k, v in metrics.items()}

    # ---------------------------------------------------------------- loop
    def fit(self, until: int | None = None) -> History:
        """Train until max_iters or early stopping; restore the best weights; return the History.

        `until` pauses after that step instead (the schedule still runs to max_iters), so a notebook
        can train in chunks; a later `fit()` carries on. Ctrl-C (SIGINT, which is also what
        interrupting a notebook kernel sends) or `request_stop()` stops cleanly after the current
        step: a checkpoint of that step is written and the history so far returned, so a resume
        continues exactly. A second Ctrl-C stops at once, without saving (the last checkpoint stays).
        """
        cfg = self.config
        stop_at = min(until, cfg.max_iters) if until is not None else cfg.max_iters
        self.model.train()
        self._window = []  # time spent outside fit() (a pause, a notebook cell) is not a step's
        self._stop_requested = False
        bar = tqdm(total=cfg.max_iters, initial=self.step, disable=not self.progress, desc="train",
                   dynamic_ncols=True)
        stopped_early = False
        try:
            with self._stop_on_sigint():
                while self.step < stop_at:
                    record = self._train_step()
                    bar.update(1)
                    if record is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                    if self._is_eval_step():
                        stopped_early = self._eval_and_checkpoint(at_end=self.step == cfg.max_iters)
                        if stopped_early:
                            break
                    if self._should_stop(record is not None):
                        log.warning("interrupted at step %d; saving a checkpoint", self.step)
                        if self._saved_step != self.step:  # (an evaluation step may have saved it)
                            self.save()
                        return self.history
        finally:
            bar.close()
        self.finished = stopped_early or self.step >= cfg.max_iters
        if self._best_state is not None and self.finished:
            self._load_weights(self._best_state)
        return self.history

    def request_stop(self) -> None:
        """Stop `fit()` after the current step, with a checkpoint (what Ctrl-C does; for callbacks, widgets)."""
        self._stop_requested = True

    @contextlib.contextmanager
    def _stop_on_sigint(self):
        """While training, a first SIGINT requests a clean stop instead of raising KeyboardInterrupt."""
        if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
            yield
            return

        def handler(signum, frame):
            if self._stop_requested:  # the second Ctrl-C: stop now
                raise KeyboardInterrupt
            log.warning("Ctrl-C: stopping after this step (press again to stop at once, without saving)")
            self.request_stop()

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _should_stop(self, synced: bool) -> bool:
        """Whether a stop was requested; under torchrun every rank must agree, so the ranks decide
        together at logging steps, where they synchronise anyway."""
        if not self.dist.enabled:
            return self._stop_requested
        if not synced:
            return False
        flag = torch.tensor(float(self._stop_requested), device=self.device)
        return bool(mean_across_ranks(flag, self.dist).item() > 0)

    def _gradient_sync(self, last: bool):
        """Ranks exchange gradients only after the last micro-batch of an accumulated step."""
        if self.sharded:  # FSDP2: keep unsharded gradients locally until the last backward
            self.model.set_requires_gradient_sync(last)
        elif self._ddp is not None and not last:
            return self._ddp.no_sync()
        return contextlib.nullcontext()

    def _train_step(self) -> dict | None:
        cfg = self.config
        self._window.append(time.perf_counter())
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        tokens = 0
        for micro in range(cfg.grad_accum):
            batch = self.next_batch(self.generator)
            with self._gradient_sync(last=micro == cfg.grad_accum - 1):
                with autocast_context(self.device, cfg.dtype):
                    _, loss = self._forward(*batch)
                (loss / cfg.grad_accum).backward()
            tokens += batch[-1].numel() * self.dist.world_size  # the global batch
        grad_norm = None
        if cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if self.sharded:  # a DTensor, already reduced over the ranks
                grad_norm = full_tensor(grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_per_step = tokens
        if self.step % cfg.log_interval and not self._is_eval_step():  # the device may still be working: no time is taken until it is synchronised
            return None
        loss_value = mean_across_ranks(loss, self.dist).item()  # syncs the device: only on logging steps
        dt = (time.perf_counter() - self._window[0]) / len(self._window)  # per step, over the window
        self.step_times += [dt] * len(self._window)
        self._window = []
        if not math.isfinite(loss_value):
            last = ckpt.latest_checkpoint(self.run_dir) if self.run_dir else None
            raise NonFiniteLossError(
                f"loss became {loss_value} at step {self.step} (lr {lr:.2e}); lower --lr or raise "
                f"--warmup-iters and resume; last good checkpoint: {last or 'none written yet'}")
        record = self.history.log(step=self.step, loss=loss_value, lr=lr, ms_per_iter=dt * 1000,
                                  tokens_per_s=tokens / dt,
                                  grad_norm=float(grad_norm) if grad_norm is not None else float("nan"))
        self._call("on_step", record)
        return record

    def _is_eval_step(self) -> bool:
        """Evaluation follows every eval_interval-th step and the last one (they are logging steps too)."""
        return self.step % self.config.eval_interval == 0 or self.step == self.config.max_iters

    def _eval_and_checkpoint(self, at_end: bool) -> bool:
        """Evaluate, track the best weights, checkpoint; True when early stopping triggers."""
        cfg = self.config
        metrics = self.evaluate()
        value = metrics[self.monitor]
        if not math.isfinite(value):
            raise NonFiniteLossError(f"{self.monitor} became {value} at step {self.step}; lower --lr and resume")
        if self._is_better(value):
            self.best, self.best_step, self.evals_since_best = value, self.step, 0
            self._best_state = self._copy_weights()
        else:
            self.evals_since_best += 1
        record = self.history.log(step=self.step, **metrics, best=self.best)
        self._call("on_eval", record)
        stop = cfg.patience is not None and self.evals_since_best >= cfg.patience
        due = cfg.checkpoint_interval is None or self.step % cfg.checkpoint_interval == 0
        if due or at_end or stop:
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

    # ------------------------------------------------------------- figures
    def summary(self) -> dict[str, float]:
        """Speed figures of this session's steps (the first 10% are warm-up and left out)."""
        times = self.step_times[len(self.step_times) // 10:] or self.step_times
        if not times:
            return {}
        median = statistics.median(times)
        return {"ms_per_iter_median": median * 1000, "tokens_per_s": self.tokens_per_step / median,
                "train_s": sum(self.step_times)}
