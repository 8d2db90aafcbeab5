"""Fine-tuning for text classification: a head on a pretrained model, and honest baselines.

`finetune(checkpoint, task, config)` puts a linear classification head on a pretrained
workbench GPT (or on a Hugging Face encoder) and trains it with the same `Trainer` as
pretraining: warmup + cosine decay, clipping, early stopping on validation macro-F1 with
best-weights restore, checkpoints and exact resume. One `FinetuneConfig.mode` picks what
is trained, all with the same data, step budget and seeds so the modes compare fairly:

    full       every parameter of the pretrained GPT and the head
    frozen     the head only; the backbone is frozen (its weights stay bit-identical)
    scratch    the same architecture from a random initialisation, everything trained
    lora       low-rank adapters (peft) on the attention projections, plus the head
    multitask  full, plus lm_weight x the language-modelling loss on the passage tokens
               (the auxiliary objective of the original GPT fine-tuning recipe)
    hf         full fine-tuning of a Hugging Face encoder (the packaged all-MiniLM-L6-v2)

`workbench.compare` runs the grid of modes x seeds beside a TF-IDF baseline for notebook 03.

Passages are tokenized with the checkpoint's tokenizer, truncated to `max_len` tokens
(the start is kept) and right-padded. A causal model never lets a position attend to a
later one, so right padding cannot change any real position's hidden state: no attention
mask is needed, and `lengths` alone says where each passage ends (the HF encoder, which is
bidirectional, builds its attention mask from the same `lengths`).

The classification metrics (accuracy, macro-F1, per-class precision/recall/F1, confusion
matrix) come from `workbench.metrics`, shared with the evaluation card.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from torch.nn import functional as F

from .checkpoint import MODEL_FILE, DamagedCheckpointError
from .config import FinetuneConfig, ModelConfig, RunConfig, TrainConfig, from_dict
from .metrics import accuracy, macro_f1, split_metrics
from .model import GPT, eval_mode
from .pretrain import load_pretrained
from .run import COMMAND_LINE, Run, check_same_task, load_final, require_artifacts, setup_device
from .tasks import TaskData, encode_task, encode_texts, trim_padding
from .tokenizer import tokenizer_from_dict
from .train import Callback, History, Trainer, autocast_context

log = logging.getLogger(__name__)

HF_MAX_LEN = 128  # the packaged MiniLM tokenizer truncates at 128 tokens
CUT_WARN_PCT = 25  # warn when more than this share of training passages fill the window and are cut
LOSS_STILL_FALLING_PCT = 5  # with the macro-F1 tied at its best: the model is still learning (`still_rising`)
LORA_TARGETS = ["attn.c_attn", "attn.c_proj"]  # the attention projections (not mlp.c_proj)


# ---------------------------------------------------------------------------------------------
# Models: a pretrained body and a linear head
# ---------------------------------------------------------------------------------------------


def pool(h: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, C) hidden states -> (B, C): mean over the real tokens, the last real one, or the first ([CLS])."""
    if how == "last":
        return h[torch.arange(h.size(0), device=h.device), lengths - 1]
    if how == "cls":
        return h[:, 0]
    mask = (torch.arange(h.size(1), device=h.device)[None, :] < lengths[:, None]).unsqueeze(-1).to(h.dtype)
    return (h * mask).sum(dim=1) / lengths[:, None].to(h.dtype)


class GPTClassifier(nn.Module):
    """A workbench GPT with a linear head on its pooled final hidden states.

    `forward(idx, lengths, labels=None) -> (logits (B, num_labels), loss or None)`; with
    lm_weight > 0 the loss adds lm_weight x next-token cross-entropy over the real tokens.
    """

    def __init__(self, backbone: GPT, num_labels: int, pooling: str = "mean", dropout: float = 0.0,
                 lm_weight: float = 0.0):
        super().__init__()
        assert pooling in ("mean", "last"), pooling
        self.backbone, self.pooling, self.lm_weight = backbone, pooling, lm_weight
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.n_embd, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)  # as GPT's own layers
        nn.init.zeros_(self.head.bias)

    def forward(self, idx, lengths, labels=None):
        h = self.backbone.hidden_states(idx)  # (B, T, C)
        logits = self.head(self.dropout(pool(h, lengths, self.pooling)))  # (B, num_labels)
        if labels is None:
            return logits, None
        loss = F.cross_entropy(logits.float(), labels)
        if self.lm_weight > 0:
            lm_logits = self.backbone.lm_head(h[:, :-1])  # (B, T-1, vocab): predict tokens 1..T-1
            T = idx.size(1)
            pad = torch.arange(1, T, device=idx.device)[None, :] >= lengths[:, None]  # target is padding
            targets = idx[:, 1:].masked_fill(pad, -1)
            lm = F.cross_entropy(lm_logits.float().reshape(-1, lm_logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            loss = loss + self.lm_weight * lm
        return logits, loss


class HFClassifier(nn.Module):
    """A Hugging Face encoder (e.g. BERT) with a linear head on mean-pooled or [CLS] output.

    `forward(idx, lengths, labels=None) -> (logits, loss)`; the attention mask comes from lengths.
    """

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "mean", dropout: float = 0.0):
        super().__init__()
        assert pooling in ("mean", "cls"), pooling
        self.encoder, self.pooling = encoder, pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx, lengths, labels=None):
        mask = (torch.arange(idx.size(1), device=idx.device)[None, :] < lengths[:, None]).long()
        h = self.encoder(input_ids=idx, attention_mask=mask).last_hidden_state  # (B, T, C)
        logits = self.head(self.dropout(pool(h, lengths, self.pooling)))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return logits, loss


def load_hf_encoder(name: str = "minilm", with_model: bool = True):
    """A private copy of a Hugging Face encoder (fused SDPA attention) and its tokenizer.

    "minilm" is the packaged all-MiniLM-L6-v2 (`capture.load_minilm`), copied so that training
    never touches the instance the attention views share; anything else is a local model folder.
    with_model=False returns (None, tokenizer) without copying or loading any weights.
    """
    if name == "minilm":
        from .capture import load_minilm

        try:
            model, tokenizer = load_minilm()
        except ImportError as e:
            raise ValueError(f"mode='hf' needs the packaged MiniLM ({e}); or pick another --mode") from None
        model = copy.deepcopy(model) if with_model else None
    else:
        from transformers import AutoModel, AutoTokenizer

        if not Path(name).is_dir():
            raise FileNotFoundError(f"hf_model {name!r} is neither 'minilm' nor a local model folder; pass one of those")
        try:  # transformers explains a folder it cannot load in several lines; one names the fix here
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModel.from_pretrained(name) if with_model else None
        except (OSError, ValueError):
            raise ValueError(f"hf_model {name!r} is not a Hugging Face model folder (no loadable config.json, weights "
                             "and tokenizer files); pass 'minilm' or a folder saved with save_pretrained") from None
    if model is None:
        return None, tokenizer
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")  # training has no use for attention weights
    pooler = getattr(model, "pooler", None)
    if pooler is not None:  # the pooler is not used (we pool ourselves): do not count or train it
        pooler.requires_grad_(False)
    return model.train(), tokenizer


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, tied tensors counted once."""
    params = list(model.parameters())  # parameters() already yields a tied tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def build_classifier(config: FinetuneConfig, num_labels: int, model_config: ModelConfig | None = None,
                     pretrained: GPT | None = None) -> nn.Module:
    """The classifier of `config.mode`, with the right parameters frozen.

    Args:
        config: the fine-tuning config (mode, pooling, dropout, LoRA rank, ...).
        num_labels: classes.
        model_config: the GPT's shape (GPT modes).
        pretrained: weights to start from (full, frozen, lora, multitask); None builds the
            architecture only (scratch, or a model whose weights are loaded next).
    Returns:
        GPTClassifier or HFClassifier; the head is initialised from torch's current RNG.
    """
    if config.mode == "hf":
        encoder, _ = load_hf_encoder(config.hf_model)
        return HFClassifier(encoder, num_labels, config.pooling, config.dropout)
    assert model_config is not None
    backbone = GPT(replace(model_config, dropout=config.dropout))
    if pretrained is not None and config.mode != "scratch":
        backbone.load_state_dict(pretrained.state_dict())
    if config.mode == "frozen":
        backbone.requires_grad_(False)
    elif config.mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.dropout,
                          target_modules=LORA_TARGETS)
        backbone = inject_adapter_in_model(lora, backbone)  # in place; freezes all but the adapters
    elif not backbone.config.tie_weights:
        backbone.lm_head.requires_grad_(config.mode == "multitask")  # unused without the LM loss
    lm_weight = config.lm_weight if config.mode == "multitask" else 0.0
    return GPTClassifier(backbone, num_labels, config.pooling, config.dropout, lm_weight)


_LAYER = re.compile(r"\.(?:h|layer)\.(\d+)\.")


def param_groups(model: nn.Module, config: FinetuneConfig, lr: float) -> list[dict]:
    """Trainer parameter groups: the head at head_lr/lr, backbone depth d at layer_decay**(L+1-d).
    (`lr` is the backbone's learning rate, `config.loop(n).lr`.)

    Depth: embeddings 0, block i -> i+1, everything above the blocks (final norm) L+1.
    """
    body = model.backbone if isinstance(model, GPTClassifier) else model.encoder
    n_layer = body.config.n_layer if isinstance(body, GPT) else body.config.num_hidden_layers
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("head."):
            scale = config.head_lr / lr
        else:
            m = _LAYER.search(name)
            depth = int(m.group(1)) + 1 if m else (0 if ("wte" in name or "wpe" in name or "embeddings" in name)
                                                   else n_layer + 1)
            scale = config.layer_decay ** (n_layer + 1 - depth)
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "lr_scale": s} for s, ps in groups.items()]


# ---------------------------------------------------------------------------------------------
# Prediction and evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_logits(model: nn.Module, idx: torch.Tensor, lengths: torch.Tensor, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits (N, num_labels) in float32 on the CPU, batches cut by length to skip padding."""
    order = torch.argsort(lengths, descending=True)
    chunks = []
    with eval_mode(model):
        for i in range(0, len(order), batch_size):
            sel = order[i : i + batch_size]
            x, n = trim_padding(idx[sel], lengths[sel]), lengths[sel]
            logits, _ = model(x.to(device), n.to(device))
            chunks.append(logits.float().cpu())
    assert chunks, "predict_logits needs at least one text"
    out = torch.empty(len(lengths), chunks[0].size(1))
    out[order] = torch.cat(chunks)
    return out


@dataclass
class TextClassifier:
    """A fine-tuned model with what it needs to classify raw text."""

    model: nn.Module
    tokenizer: Any  # workbench Tokenizer or Hugging Face tokenizer
    labels: list[str]
    config: FinetuneConfig
    max_len: int

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_texts(self.tokenizer, list(texts), self.max_len)

    def predict_proba(self, texts: list[str] | str) -> np.ndarray:
        """Class probabilities (N, num_labels) for raw texts."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no texts to classify; pass a text or a list of texts")
        device = next(self.model.parameters()).device
        logits = predict_logits(self.model, *self.encode(texts), self.config.eval_batch_size, device)
        return logits.softmax(-1).numpy()

    def predict(self, texts: list[str] | str) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(-1)]


class _Evaluator:
    """A Trainer `evaluate` function: loss, accuracy and macro-F1 on one encoded split.

    It keeps each evaluation's logits by training step, so the metrics of the restored best
    weights need no second pass over the split.
    """

    def __init__(self, idx, lengths, labels, num_labels: int, batch_size: int, device, prefix: str = "val"):
        self.idx, self.lengths, self.labels = idx, lengths, labels
        self.num_labels, self.batch_size, self.device, self.prefix = num_labels, batch_size, device, prefix
        self.trainer: Trainer | None = None  # set once the Trainer exists: its step keys the logits
        self.logits: dict[int, torch.Tensor] = {}

    def __call__(self, model) -> dict[str, float]:
        logits = predict_logits(model, self.idx, self.lengths, self.batch_size, self.device)
        if self.trainer is not None:
            self.logits[self.trainer.step] = logits
        pred = logits.argmax(-1).numpy()
        return {f"{self.prefix}_loss": F.cross_entropy(logits, self.labels).item(),
                f"{self.prefix}_accuracy": accuracy(self.labels.numpy(), pred),
                f"{self.prefix}_macro_f1": macro_f1(self.labels.numpy(), pred, self.num_labels)}


# ---------------------------------------------------------------------------------------------
# The fine-tuning run
# ---------------------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    classifier: TextClassifier
    history: History
    metrics: dict[str, Any]
    run_dir: Path | None

    @property
    def model(self) -> nn.Module:
        return self.classifier.model


def _task_info(task: TaskData) -> dict[str, Any]:
    """What identifies the task in a checkpoint: its name, labels, split sizes and rows (`fingerprint`)."""
    return {"name": task.name, "labels": list(task.labels), **{f"n_{s}": len(task.split(s)) for s in ("train", "val", "test")},
            "fingerprint": task.fingerprint(("text", "label"))}


def finetune(checkpoint: str | Path | None, task: TaskData, config: FinetuneConfig, out_dir: str | Path | None = None,
             callbacks: Iterable[Callback] = (), progress: bool = True, resume: bool | str = False,
             warn_if_rising: bool = True) -> FinetuneResult:
    """Fine-tune a classifier on `task` as `config` says; write it to `out_dir` (if given).

    Args:
        checkpoint: a pretraining run or model directory (GPT modes); ignored for mode "hf" and
            when resuming (the run's own files rebuild the model).
        task: from `workbench.tasks.load_task`.
        config: FinetuneConfig (its `train` is the loop).
        out_dir: run directory: model/ (safetensors + finetune.json, config.json, tokenizer.json,
            labels.json, task.json), checkpoints/, history.csv, metrics.json, predictions.csv (each val
            and test passage's class probabilities: `load_predictions`). Must be new or empty
            unless resume.
        callbacks: Trainer callbacks (`train.Callback`: on_fit_start, on_step, on_eval, on_checkpoint).
        progress: show a progress bar.
        resume: continue the run in out_dir from its latest checkpoint, exactly (see `workbench.run.Run`).
        warn_if_rising: log a warning when the run's validation macro-F1 was still rising at its end
            (`still_rising`: more epochs may help); a grid (`compare.compare_modes`) says it once for all its runs.
    Returns:
        FinetuneResult: the classifier (best validation macro-F1 weights), History and metrics: test_accuracy,
        test_macro_f1, test_per_class, test_confusion, val_accuracy, val_macro_f1, train_s, trainable_params,
        total_params, tokens_per_s, examples_per_s, ... If training was interrupted (Ctrl-C) the run is
        checkpointed, nothing final is written and metrics["completed"] is False: call again with resume=True.
        metrics["still_rising"]: the validation scores were still improving at the end (`still_rising`).
    """
    run = Run(out_dir, resume, kind="finetune")
    device = setup_device(config.train, run.dist)
    info = _task_info(task)
    if run.saved is not None:
        run.check_same("finetune", asdict(config), ignore=("train",))  # the loop may change, as pretrain's
        check_same_task(run.saved, info, "--task, --text-col, --label-col, --split-seed and --max-chars")
    pretrained, tokenizer, base_config = _starting_point(run, checkpoint, config.mode)
    torch.manual_seed(config.train.seed)  # the head, the adapters and (scratch) the whole GPT
    model = build_classifier(config, task.num_labels, base_config.model if base_config else None, pretrained)
    if config.mode == "hf":
        tokenizer, limit = load_hf_encoder(config.hf_model, with_model=False)[1], HF_MAX_LEN
    else:
        limit = base_config.model.block_size
    max_len = config.window(limit)

    enc = encode_task(tokenizer, task, max_len)
    cut_pct = 100.0 * float((enc["train"][1] >= max_len).float().mean())  # passages that fill the window
    if cut_pct > CUT_WARN_PCT and max_len < limit and run.saved is None:  # the model could read more of them
        # (cut at the model's whole context, they are the most it can read: compare_modes says so beside TF-IDF)
        log.warning("%s: %.0f%% of the training passages fill the %d-token window and are cut; raise max_len "
                    "(--max-len, at most %d) or lower max_chars (--max-chars)", run_name(config), cut_pct, max_len,
                    limit)
    y = {s: torch.tensor(task.split(s)["label_id"].to_numpy(), dtype=torch.long) for s in ("train", "val", "test")}
    tc = config.loop(len(y["train"]))
    evaluate = _Evaluator(*enc["val"], y["val"], task.num_labels, config.eval_batch_size, device)
    artifacts = _artifacts(config, task, info, base_config, tokenizer)
    trainer = Trainer(model, tc, _batch_sampler(*enc["train"], y["train"], tc, device), evaluate, run_dir=run.out,
                      artifacts=artifacts, monitor="val_macro_f1", mode="max", callbacks=callbacks, progress=progress,
                      param_groups=param_groups(model, config, tc.lr), dist=run.dist, device=device,
                      count_tokens=lambda batch: int(batch[1].sum()))
    evaluate.trainer = trainer
    completed = run.fit(trainer)
    classifier = TextClassifier(model, tokenizer, list(task.labels), config, max_len)
    metrics: dict[str, Any] = {"mode": config.mode, "seed": tc.seed, **run.base_metrics(trainer)}
    if not completed:
        return FinetuneResult(classifier, trainer.history, metrics, run.out)

    split_logits = _best_logits(trainer, evaluate, enc, config.eval_batch_size)
    for s, logits in split_logits.items():
        metrics |= split_metrics(y[s].numpy(), logits.argmax(-1).numpy(), list(task.labels), prefix=f"{s}_")
    metrics |= _run_summary(classifier, tc, task, cut_pct, metrics)
    why = still_rising(trainer.history)
    metrics["still_rising"] = bool(why)
    if warn_if_rising and why:
        _warn_still_rising(config, metrics, why)
    run.finish(trainer, artifacts, metrics)
    if run.out is not None and run.dist.is_main:
        write_predictions(run.out / PREDICTIONS, task, split_logits)
    return FinetuneResult(classifier, trainer.history, metrics, run.out)


def _starting_point(run: Run, checkpoint: str | Path | None, mode: str) -> tuple[GPT | None, Any, RunConfig | None]:
    """(pretrained GPT, tokenizer, its RunConfig) to build the classifier from: the pretraining checkpoint's,
    or when resuming the run's own tokenizer and config (its checkpoint then restores every weight);
    (None, None, None) for mode "hf", whose encoder and tokenizer are the packaged ones."""
    if mode == "hf":
        return None, None, None
    if run.saved is not None:
        base_config = run.saved.artifact("config", RunConfig.from_dict)
        return None, run.saved.artifact("tokenizer", tokenizer_from_dict), base_config
    if checkpoint is None:
        raise ValueError(f"mode={mode!r} needs --checkpoint (a pretraining run); only mode='hf' runs without one")
    return load_pretrained(checkpoint)


def _batch_sampler(idx: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, tc: TrainConfig,
                   device: torch.device) -> Callable[[torch.Generator], tuple[torch.Tensor, ...]]:
    """The Trainer's `next_batch`: tc.batch_size training passages drawn with replacement from the Trainer's
    (checkpointed) generator, as (idx (B, T), lengths (B,), labels (B,)) on `device`."""

    def next_batch(generator: torch.Generator):
        ix = torch.randint(len(labels), (tc.batch_size,), generator=generator)
        n = lengths[ix]
        x = idx[ix] if tc.cuda_graph else trim_padding(idx[ix], n)  # a CUDA graph replays one shape
        return x.to(device), n.to(device), labels[ix].to(device)

    return next_batch


def _artifacts(config: FinetuneConfig, task: TaskData, info: dict[str, Any], base_config: RunConfig | None,
               tokenizer: Any) -> dict[str, Any]:
    """The JSON files written beside every checkpoint and the final model: what rebuilds and resumes the run."""
    artifacts = {"finetune": asdict(config), "labels": list(task.labels), "task": info}
    if task.source is not None:  # how to load the task again: a bare `finetune --resume` reads it
        artifacts["task_source"] = task.source
    if config.mode != "hf":
        artifacts |= {"config": base_config.to_dict(), "tokenizer": tokenizer.to_dict()}
    return artifacts


def _best_logits(trainer: Trainer, evaluate: _Evaluator, enc: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 batch_size: int) -> dict[str, torch.Tensor]:
    """{"val", "test"}: logits (N, num_labels) of the restored best weights. Those weights were scored on val
    at best_step during training (unless that step was before a resume); the rest is a pass in the training
    dtype, as the validation passes were."""
    logits = {"val": evaluate.logits.get(trainer.best_step), "test": None}
    for s in logits:
        if logits[s] is None:
            with autocast_context(trainer.device, trainer.compute_dtype):
                logits[s] = predict_logits(trainer.model, *enc[s], batch_size, trainer.device)
    return logits


def _run_summary(classifier: TextClassifier, tc: TrainConfig, task: TaskData, cut_pct: float,
                 metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's account of the run beside its scores: settings, sizes and speed (from `metrics`'s timing)."""
    config, n_train = classifier.config, len(task.train)
    trainable, total = count_params(classifier.model)
    per_step = tc.batch_size * tc.grad_accum  # examples one optimizer step learns from
    return {
        "pooling": config.pooling, "lr": tc.lr, "head_lr": config.head_lr, "steps": tc.max_iters,
        "window_filled_pct": cut_pct, "epochs": tc.max_iters * per_step / n_train, "max_len": classifier.max_len,
        "trainable_params": trainable, "total_params": total, "train_s": metrics.get("train_s", 0.0),
        "examples_per_s": per_step * 1000 / metrics.get("ms_per_iter_median", float("nan")),
        "labels": list(task.labels), "task": task.name, "n_train": n_train, "n_val": len(task.val),
        "n_test": len(task.test),
    }


def run_name(config: FinetuneConfig) -> str:
    """How warnings name a run, so that those of a grid's runs tell them apart: "lora, seed 1"."""
    return f"{config.mode}, seed {config.train.seed}"


def still_rising(history: History) -> str:
    """Why a run's validation scores say more epochs may help, or "" if they do not. The last evaluation's
    macro-F1 (what the kept weights are chosen by) must be its best so far and below 1, and either above
    every earlier one, or tied with the best while the validation loss still fell more than
    LOSS_STILL_FALLING_PCT % over the last interval (on a small validation split the macro-F1 moves in
    coarse steps and often ties, while the loss shows the model still learning). A falling loss alone is
    not enough: it keeps falling as the model grows more confident after the macro-F1 has peaked."""
    evals = history.evals()
    if len(evals) < 2:
        return ""
    f1, loss = evals["val_macro_f1"].to_numpy(), evals["val_loss"].to_numpy()
    if f1[-1] < f1[:-1].max() or f1[-1] >= 1.0:
        return ""
    if f1[-1] > f1[:-1].max():
        return f"the validation macro-F1 rose to its best at the last evaluation ({f1[:-1].max():.3f} -> {f1[-1]:.3f})"
    if loss[-1] < (1 - LOSS_STILL_FALLING_PCT / 100) * loss[-2]:
        return (f"the validation macro-F1 is at its best ({f1[-1]:.3f}) and the validation loss still fell "
                f"{100 * (1 - loss[-1] / loss[-2]):.0f}% over the last interval ({loss[-2]:.3f} -> {loss[-1]:.3f})")
    return ""


def _warn_still_rising(config: FinetuneConfig, metrics: dict[str, Any], why: str) -> None:
    """The one warning of a run that was `still_rising`."""
    log.warning("%s: %s at step %d (%.1f epochs): more epochs may help; raise %s", run_name(config), why,
                metrics["final_step"], metrics["epochs"], more_training(config.train))


def more_training(train: TrainConfig | None = None) -> str:
    """The setting that trains longer, in the caller's terms: the flag on the command line, else the
    config field (and a notebook's profile); with `train`, its value now."""
    if COMMAND_LINE.get():
        if train is None:
            return "--epochs or --max-iters"
        return (f"--epochs (now {train.epochs:g})" if train.max_iters is None else
                f"--max-iters (now {train.max_iters}), or give --epochs")
    now = ("" if train is None else f" (now {train.epochs:g})" if train.max_iters is None else
           f" (now max_iters {train.max_iters})")
    return f"FinetuneConfig.train.epochs or max_iters{now}; in a notebook, profile \"full\" trains longer"


# ---------------------------------------------------------------------------------------------
# What a finished run predicted
# ---------------------------------------------------------------------------------------------

PREDICTIONS = "predictions.csv"  # in a finetune run directory, beside model/ and metrics.json


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:12]


def write_predictions(path: Path, task: TaskData, logits: dict[str, torch.Tensor]) -> None:
    """Every val and test passage's class probabilities as the finished run gave them (its best
    weights, in its training dtype: the numbers behind its val_/test_ metrics), one row per passage:
    split, text_sha1 (which passage), label, predicted, then p_<label> for each class."""
    import pandas as pd

    frames = []
    for s, split_logits in logits.items():
        frame, probs = task.split(s), split_logits.float().softmax(-1).numpy()
        table = pd.DataFrame({"split": s, "text_sha1": [_text_key(t) for t in frame["text"]],
                              "label": frame["label"].to_numpy(), "predicted": [task.labels[i] for i in probs.argmax(-1)]})
        frames.append(table.join(pd.DataFrame(probs, columns=[f"p_{name}" for name in task.labels])))
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)


def load_predictions(run_dir: str | Path, task: TaskData, split: str = "test") -> np.ndarray | None:
    """The class probabilities (N, num_labels) a finetune run saved for `split` of `task` (`write_predictions`),
    or None when it saved none for exactly these passages and labels (another subsample or max_chars, an
    older run, a damaged file): then score the split with `load_finetuned(run_dir).predict_proba`."""
    import pandas as pd

    path = Path(run_dir) / PREDICTIONS
    try:
        table = pd.read_csv(path)
        rows = table[table["split"] == split]
        probs = rows[[f"p_{name}" for name in task.labels]].to_numpy(dtype=np.float64)
        keys = list(rows["text_sha1"])
    except (OSError, ValueError, KeyError):  # missing, unreadable, not this task's columns
        return None
    if keys != [_text_key(t) for t in task.split(split)["text"]] or not np.isfinite(probs).all():
        return None
    return probs


def _class_names(content: Any) -> list:
    """labels.json's content: the class names in id order, two or more, distinct."""
    if not (isinstance(content, list) and len(content) >= 2 and len(set(map(repr, content))) == len(content)
            and all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in content)):
        raise ValueError("not a list of two or more distinct class names")
    return content


def load_finetuned(path: str | Path, device: str = "cpu") -> TextClassifier:
    """Rebuild a fine-tuned classifier from a finetune run directory or its model/ folder."""
    hint = "point at a finetune run's --out"
    c = load_final(path, ("finetune", "labels"), hint, "python -m workbench finetune --checkpoint BASE --out DIR",
                   kind="finetune")
    config = c.artifact("finetune", lambda d: from_dict(FinetuneConfig, d))
    labels = c.artifact("labels", _class_names)
    with safe_open(str(c.path / MODEL_FILE), "pt") as f:  # (its header was checked by load_final)
        classes = f.get_slice("head.bias").get_shape()[0] if "head.bias" in f.keys() else len(labels)
    if classes != len(labels):  # else the weights would be blamed for not fitting the head
        raise DamagedCheckpointError(c.path / "labels.json", f"is damaged (it names {len(labels)} classes, the "
                                     f"weights' head {classes})")
    if config.mode != "hf":
        require_artifacts(c, ("config", "tokenizer"), hint)
    base = c.artifact("config", RunConfig.from_dict) if config.mode != "hf" else None
    model = build_classifier(config, len(labels), base.model if base else None)
    c.load_weights(model)
    if config.mode == "hf":
        tokenizer, limit = load_hf_encoder(config.hf_model, with_model=False)[1], HF_MAX_LEN
    else:
        tokenizer, limit = c.artifact("tokenizer", tokenizer_from_dict), base.model.block_size
    return TextClassifier(model.to(device).eval(), tokenizer, labels, config, config.window(limit))
