"""The evaluation card: how good is a model, measured five ways, as plain numbers and DataFrames.

- Language modelling on held-out text (`lm_by_split`: every held-out play, and each split's
  plays combined): one held-out loss (`heldout_loss`, nats per token) with
  one windowing rule, non-overlapping windows of block_size tokens that predict every token
  after the first once, used by training evaluation (`lm_evaluator`) and by the card
  (`split_loss`, `lm_metrics`, `perplexity_by_document`), so the same model on the same ids
  gives the same number everywhere. Besides cross-entropy: perplexity, and bits per character /
  byte, which (unlike perplexity) compare a char-level and a BPE model fairly because they
  divide by the same characters.
- Classification, from `workbench.metrics` (`classification_metrics`, `per_class_table`,
  `confusion`, `calibration`): accuracy, precision / recall / F1 per class and macro, the
  confusion matrix, and expected calibration error with the data of a reliability diagram.
- Generation, from `workbench.generation_eval` (`generation_table`, `continuation_task`,
  `continuation_scores`): greedy, temperature, top-k and top-p decoding; distinct-n and
  repetition; BLEU and chrF (computed by `sacrebleu`) of continuations of held-out passages.
- Compression, from `workbench.compress` (`compression_table`; `lm_compression` scores each variant
  on the start of a held-out text): dynamic int8 quantization and magnitude pruning, with size on
  disk, CPU speed and the change in perplexity.
- `evaluate_checkpoint`: all of it for one pretraining run, what `python -m workbench
  evaluate` writes to metrics.json.

Figures of these tables are in `workbench.viz.evaluation`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import json_safe
from .compress import compression_table
from .data import (Corpus, Document, encode_splits, join_documents, load_corpus, require_columns,
                   split_documents)
from .generation_eval import continuation_scores, continuation_task
from .metrics import calibration, classification_metrics, confusion
from .model import check_vocabulary, eval_mode
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .config import RunConfig

LN2 = math.log(2.0)


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# =============================================================================================
# Language modelling
# =============================================================================================


def sliding_windows(n_tokens: int, block_size: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """The windows that score every token of a sequence of ids exactly once (HF's perplexity guide).

    Token 0 has no context and is never scored; tokens 1..n_tokens-1 are. A window that starts
    at `begin` feeds ids[begin:end] (end - begin <= block_size) and predicts ids[begin+1:end+1];
    only its last `n_new` targets are counted, the ones no earlier window scored. Windows start
    every `stride` tokens. The default, stride = block_size, is the held-out loss's rule (see
    `heldout_loss`): non-overlapping windows, every target counted, the last window shorter.
    A smaller stride gives each counted token after the first window at least
    block_size - stride tokens of context, for about block_size / stride times the compute: a
    different (usually lower) number, not the one training reports.

    Args:
        n_tokens: length of the id sequence (>= 2).
        block_size: the model's context length T.
        stride: 1..block_size; default block_size.
    Returns:
        a list of (begin, end, n_new): the targets counted are positions end - n_new + 1 .. end.
    """
    stride = block_size if stride is None else stride
    if not 1 <= stride <= block_size:
        raise ValueError(f"stride must be in 1..block_size={block_size}, got {stride}; "
                         f"e.g. stride={block_size} (the default)")
    if n_tokens < 2:
        raise ValueError(f"need at least 2 tokens to score a text, got {n_tokens}; pass a longer text")
    windows, scored = [], 0  # `scored`: the last target position counted so far
    for begin in range(0, n_tokens - 1, stride):
        end = min(begin + block_size, n_tokens - 1)
        windows.append((begin, end, end - scored))
        scored = end
        if end == n_tokens - 1:
            break
    return windows


# Logits one evaluation forward pass may hold on a CPU: 16 MB in fp32. Larger batches are slower there
# (02's model scores its validation split in 3.9-4.2 s at 16 windows a pass against 5.2-5.7 s at 64: the
# logits outgrow the caches and the allocator's reuse, `workbench.allocator`). A GPU takes batch_size.
EVAL_LOGITS = 2**22
# Tokens × n_embd of a CPU pass, at least: 1 MB of fp32 activations per layer's input, which stays in the
# caches. 02's default model (n_embd 128, T 128) gets its 16 windows; the smoke model (n_embd 32, T 32)
# 256, not 32: a pass of a model that small is mostly fixed cost (its validation split took 2.0-2.2 s at
# 32 windows a pass and 1.2-1.3 s at 256, the same loss, on a 2-core AMD EPYC at an fp32 peak of 0.147
# TFLOP/s; 7.8 s against 1.0 s with other jobs on its cores).
EVAL_ACTIVATIONS = 2**18


@torch.no_grad()
def _window_losses(model: nn.Module, ids: np.ndarray, windows: Sequence[tuple[int, int, int]], batch_size: int,
                   device: torch.device) -> Iterator[tuple[Sequence[tuple[int, int, int]], np.ndarray]]:
    """Forward `windows` of `ids` in batches; yield (the batch's windows, ce (B, L) float64 nats).

    Consecutive windows of the same length L share a batch (batch_size of them; on a CPU at least
    EVAL_ACTIVATIONS tokens × n_embd and at most EVAL_LOGITS logits), so with stride = block_size every full window is batched and the one
    shorter last window runs alone. ce[i, t] = -log p(ids[begin_i + t + 1] | ids[begin_i : begin_i + t + 1]).
    Only the (B, L, V) logits of one batch are held; the losses leave the device per batch, summed
    later in float64.
    """
    config = getattr(model, "config", None)
    vocab, width, cpu = getattr(config, "vocab_size", 1), getattr(config, "n_embd", 0), device.type == "cpu"
    i = 0
    while i < len(windows):
        length = windows[i][1] - windows[i][0]
        rows = batch_size
        if cpu:  # enough tokens to pay for a pass (EVAL_ACTIVATIONS), not more logits than EVAL_LOGITS
            if width:
                rows = max(rows, EVAL_ACTIVATIONS // (length * width))
            rows = min(rows, max(1, EVAL_LOGITS // (length * vocab)))
        j = i
        while j < len(windows) and j - i < rows and windows[j][1] - windows[j][0] == length:
            j += 1
        batch = windows[i:j]
        pos = np.array([b for b, _, _ in batch])[:, None] + np.arange(length)  # (B, L) input positions
        x = torch.from_numpy(np.asarray(ids[pos], dtype=np.int64)).to(device)
        y = torch.from_numpy(np.asarray(ids[pos + 1], dtype=np.int64)).to(device)
        logits = model(x)[0].float()  # (B, L, V)
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
        yield batch, ce.view(len(batch), length).double().cpu().numpy()
        i = j


def _as_ids(ids) -> np.ndarray:
    """A 1-D array view of ids (a list, array, memmap or CPU tensor), not copied."""
    return ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)


@torch.no_grad()
def token_losses(model: nn.Module, ids, stride: int | None = None, batch_size: int = 16,
                 device: str | torch.device | None = None) -> np.ndarray:
    """Next-token cross-entropy (nats) of every token after the first, window by window.

    Args:
        model: a GPT (anything with `config.block_size` whose forward returns (logits, ...)).
        ids: 1-D sequence of token ids (list, array or tensor), length N >= 2.
        stride: see `sliding_windows`; default block_size (the held-out loss's windows, so
            losses.mean() is `heldout_loss`).
        batch_size: windows per forward pass.
        device: where to run; default the model's device.
    Returns:
        float64 array (N - 1,): entry p - 1 is -log p(ids[p] | the window's context before p).
    """
    ids = _as_ids(ids)
    windows = sliding_windows(len(ids), model.config.block_size, stride)
    device = torch.device(device) if device is not None else _model_device(model)
    out = np.empty(len(ids) - 1, dtype=np.float64)
    with eval_mode(model):
        for batch, ce in _window_losses(model, ids, windows, batch_size, device):
            length = ce.shape[1]
            for row, (_, e, n_new) in enumerate(batch):
                out[e - n_new : e] = ce[row, length - n_new :]  # target position p is out[p - 1]
    return out


@torch.no_grad()
def heldout_loss(model: nn.Module, ids, batch_size: int = 16, device: str | torch.device | None = None,
                 n_windows: int | None = None, seed: int = 0, block_size: int | None = None) -> float:
    """The held-out LM loss: mean next-token cross-entropy, in nats per token, of a sequence of ids.

    The one rule, used by training evaluation (`lm_evaluator`), the evaluation card and the
    notebooks: cut the ids into non-overlapping windows of block_size tokens (the last one
    shorter) and predict every token after the first exactly once, from the tokens before it in
    its window: 1..block_size tokens of input, exactly the contexts training sees, so validation
    and training loss compare. Windows restart where a sequence does, so each text scored on its
    own (e.g. a play) costs its first token and some context: a slightly different number.

    Args:
        model: a GPT (forward(idx) -> (logits, ...)); run in eval mode.
        ids: 1-D token ids (list, array, memmap or CPU tensor), length >= 2.
        batch_size: windows per forward pass (on a CPU at least; see `_window_losses`).
        device: where to run; default the model's device.
        n_windows: score a sample of this many windows, drawn without replacement by a
            generator seeded with `seed` (numpy's: no torch RNG is touched), as an estimate of
            the same quantity; None, or at least the number of windows, scores them all.
        seed: the sample's seed.
        block_size: window length; default model.config.block_size.
    Returns:
        total nats / tokens scored (len(ids) - 1 when every window is scored).
    """
    ids = _as_ids(ids)
    T = block_size or model.config.block_size
    windows = sliding_windows(len(ids), T, T)
    if n_windows is not None and n_windows < len(windows):
        if n_windows < 1:
            raise ValueError(f"n_windows must be >= 1 (or None for every window), got {n_windows}")
        pick = np.random.default_rng(seed).choice(len(windows), size=n_windows, replace=False)
        windows = [windows[k] for k in np.sort(pick)]  # in order: the shorter last window, if drawn, stays last
    device = torch.device(device) if device is not None else _model_device(model)
    total, count = 0.0, 0
    with eval_mode(model):
        for _, ce in _window_losses(model, ids, windows, batch_size, device):
            total += float(ce.sum())  # stride = T: every target of every window is counted
            count += ce.size
    return total / count


def lm_evaluator(data, block_size: int, batch_size: int, eval_iters: int | None, device, seed: int = 0,
                 prefix: str = "val") -> Callable[[nn.Module], dict[str, float]]:
    """A Trainer `evaluate` function: {f"{prefix}_loss": `heldout_loss` of the model on `data`}.

    eval_iters=None scores the whole split. An integer scores eval_iters * batch_size of the
    same windows, drawn without replacement from a generator re-seeded with `seed` at every
    call, so evaluations are comparable, never disturb the training RNG, and estimate the
    whole-split number (which they are, once eval_iters * batch_size covers every window).

    Args:
        data: 1-D token ids of the split (e.g. `encode_splits(...)["val"]`).
        block_size: T, the window length.
        batch_size: windows per forward pass.
        eval_iters: None, or batches of windows to sample.
        device: where to run.
        seed: the sample's seed.
        prefix: the metric is named f"{prefix}_loss".
    """
    n_windows = None if eval_iters is None else eval_iters * batch_size

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {f"{prefix}_loss": heldout_loss(model, data, batch_size, device, n_windows=n_windows, seed=seed,
                                               block_size=block_size)}
    return evaluate


def split_loss(model: nn.Module, tokenizer: Tokenizer, config: RunConfig, split: str = "val", batch_size: int = 16,
               device: str | torch.device | None = None) -> float:
    """`heldout_loss` on a whole split of a pretrained model's own corpus, encoded as training
    encodes it (the cached `encode_splits`): for "val", the val_loss training reports when it
    evaluates the whole split (eval_iters unset), to float rounding.

    Args:
        model, tokenizer, config: from `pretrain.load_pretrained`.
        split: "val" or "test".
    Returns:
        nats per token.
    """
    corpus = load_corpus(config.data.corpus, text_column=config.data.text_column)
    return heldout_loss(model, encode_splits(corpus, tokenizer)[split], batch_size, device)


def lm_metrics(model: nn.Module, tokenizer: Tokenizer, text: str, stride: int | None = None,
               batch_size: int = 16, device: str | torch.device | None = None) -> dict[str, float]:
    """Cross-entropy, perplexity and bits per token / character / byte of a model on a text.

    Every token but the first is scored once, by default with the held-out loss's windows
    (cross_entropy is then `heldout_loss` of the text's ids). Perplexity = exp(mean
    cross-entropy per token) depends on the tokenizer: a BPE token carries more text than a
    character, so BPE perplexities are larger. Bits per character = total cross-entropy in bits
    / number of characters scored, and bits per byte the same per UTF-8 byte: these compare
    models with different tokenizers. The characters scored are the text minus the first
    token's (which has no context); when the first token is part of a multi-byte character
    the whole text is counted.

    Args:
        model: a GPT (or anything with `config.block_size` and forward(idx) -> (logits, ...)).
        tokenizer: the model's tokenizer.
        text: held-out text (at least two tokens long).
        stride: window stride, default block_size; smaller gives more context per token and a
            different (lower) number (see `sliding_windows`).
        batch_size: windows per forward pass.
        device: default the model's device.
    Returns:
        {"tokens", "characters", "bytes", "cross_entropy" (nats/token), "perplexity",
        "bits_per_token", "bits_per_char", "bits_per_byte", "block_size", "stride"}.
    """
    check_vocabulary(model, tokenizer)
    ids = tokenizer.encode_to_array(text)
    T = model.config.block_size
    stride = T if stride is None else stride
    losses = token_losses(model, ids, stride=stride, batch_size=batch_size, device=device)
    first = tokenizer.decode(ids[:1])
    scored = text[len(first):] if text.startswith(first) else text
    n_chars, n_bytes = len(scored), len(scored.encode("utf-8"))
    total_bits = float(losses.sum()) / LN2
    ce = float(losses.mean())
    return {
        "tokens": int(len(losses)),
        "characters": n_chars,
        "bytes": n_bytes,
        "cross_entropy": ce,
        "perplexity": math.exp(ce),
        "bits_per_token": ce / LN2,
        "bits_per_char": total_bits / max(n_chars, 1),
        "bits_per_byte": total_bits / max(n_bytes, 1),
        "block_size": int(T),
        "stride": int(stride),
    }


def perplexity_by_document(model: nn.Module, tokenizer: Tokenizer, documents: Sequence[Document] | Mapping[str, str],
                           stride: int | None = None, batch_size: int = 16,
                           device: str | torch.device | None = None) -> pd.DataFrame:
    """`lm_metrics` of each document on its own (e.g. each held-out play).

    Args:
        documents: `Document`s (e.g. `held_out_documents(corpus)["val"]`) or {name: text}.
        stride, batch_size, device: as in `lm_metrics`.
    Returns:
        one row per document, in order: document, genre ("" for plain texts), then the
        `lm_metrics` columns.
    """
    items = ([(name, "", text) for name, text in documents.items()] if isinstance(documents, Mapping)
             else [(d.title, d.genre, d.text) for d in documents])
    rows = [{"document": name, "genre": genre, **lm_metrics(model, tokenizer, text, stride, batch_size, device)}
            for name, genre, text in items]
    return pd.DataFrame(rows)


# the measurements of `combine_lm_metrics` shown in a table (block_size and stride are settings, bytes ~ characters)
LM_COLUMNS = ("tokens", "characters", "cross_entropy", "perplexity", "bits_per_token", "bits_per_char", "bits_per_byte")


def lm_by_split(model: nn.Module, tokenizer: Tokenizer, splits: Mapping[str, Sequence[Document]],
                stride: int | None = None, batch_size: int = 16, device: str | torch.device | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every document of several splits scored on its own, and each split's documents combined.

    Args:
        splits: split name -> its documents, e.g. `held_out_documents(corpus)`.
        stride, batch_size, device: as in `lm_metrics`.
    Returns:
        (`perplexity_by_document` rows of every split with a `split` column, in the splits' order;
         one row per split indexed by split name: the `LM_COLUMNS` of `combine_lm_metrics`).
    """
    if not splits:
        raise ValueError("no splits given; pass e.g. held_out_documents(corpus), {split: documents}")
    frames = {name: perplexity_by_document(model, tokenizer, docs, stride, batch_size, device).assign(split=name)
              for name, docs in splits.items()}
    combined = [combine_lm_metrics(frame) for frame in frames.values()]
    return (pd.concat(frames.values(), ignore_index=True),
            pd.DataFrame(combined, index=pd.Index(list(splits), name="split"))[list(LM_COLUMNS)])


def combine_lm_metrics(rows: pd.DataFrame | Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The `lm_metrics` of several texts scored separately, as one: totals of tokens, characters,
    bytes and cross-entropy, so the result is token- (or character-) weighted, not a mean of means.

    Args:
        rows: `perplexity_by_document` output, or a list of `lm_metrics` dicts.
    Returns:
        a dict with the `lm_metrics` keys.
    """
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError("nothing to combine; pass at least one lm_metrics row")
    require_columns(df, ["tokens", "characters", "bytes", "cross_entropy"],
                    "pass perplexity_by_document's rows or lm_metrics dicts")
    tokens, chars, n_bytes = int(df["tokens"].sum()), int(df["characters"].sum()), int(df["bytes"].sum())
    total = float((df["cross_entropy"] * df["tokens"]).sum())  # nats
    ce = total / tokens
    return {"tokens": tokens, "characters": chars, "bytes": n_bytes, "cross_entropy": ce, "perplexity": math.exp(ce),
            "bits_per_token": ce / LN2, "bits_per_char": total / LN2 / max(chars, 1),
            "bits_per_byte": total / LN2 / max(n_bytes, 1), "block_size": int(df["block_size"].iloc[0]),
            "stride": int(df["stride"].iloc[0])}


# =============================================================================================
# Report helpers
# =============================================================================================


def first_chars(docs: Sequence[Document], max_chars: int | None) -> list[Document]:
    """Each document cut to its first `max_chars` characters (None: whole)."""
    return [replace(d, text=d.text[:max_chars]) for d in docs]


def held_out_documents(corpus: Corpus, max_chars: int | None = None) -> dict[str, list[Document]]:
    """The held-out text of a run's corpus as documents, by split: for the plays, the validation and
    test plays (whole, or the first `max_chars` characters of each); for another corpus, whose
    held-out text is the end of its text (`load_corpus`), its validation split (and test, where it
    has one) as one document, or its first `max_chars` characters."""
    if corpus.name == "shakespeare":
        splits = split_documents(corpus.documents)
        return {split: first_chars(splits[split], max_chars) for split in ("val", "test")}
    return {split: [Document(f"{corpus.name}: {split} split", split, "", "", corpus.splits[split][:max_chars])]
            for split in ("val", "test") if corpus.splits[split]}


def perplexity_fn(tokenizer: Tokenizer, text: str) -> Callable[[nn.Module], float]:
    """model -> perplexity on `text`: the `eval_fn` of `compression_table`."""
    return lambda model: lm_metrics(model, tokenizer, text)["perplexity"]


def lm_compression(model: nn.Module, tokenizer: Tokenizer, text: str | Sequence[Document], max_chars: int,
                   sparsities: Sequence[float] = (0.25, 0.5, 0.75), runs: int = 5, seed: int = 0) -> pd.DataFrame:
    """`compression_table` of a language model, every variant scored on the first `max_chars` of a held-out text.

    Scoring each variant on a whole split would take as many passes over it as there are variants,
    so the table scores the start of it: its baseline perplexity is that text's, not the split's.

    Args:
        model, tokenizer: a GPT and its tokenizer.
        text: held-out text, or documents (e.g. `held_out_documents(corpus)["val"]`) joined as a split's text is.
        max_chars: characters scored (>= 2); the text's first ones.
        sparsities, runs, seed: as in `compression_table`.
    Returns:
        `compression_table`'s rows (perplexity and delta_perplexity included) and characters: the
        characters of text each variant scored (the same for every row).
    """
    if max_chars < 2:
        raise ValueError(f"max_chars must be at least 2 to score a text, got {max_chars}")
    text = (text if isinstance(text, str) else join_documents(text))[:max_chars]
    table = compression_table(model, perplexity_fn(tokenizer, text), sparsities, runs=runs, seed=seed)
    return table.assign(characters=len(text))


def classifier_report(classifiers: Mapping[str, Any], task, split: str = "test", n_bins: int = 10
                      ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Every classification metric of several fine-tuned classifiers on one split of a task.

    Args:
        classifiers: name -> a `finetune.TextClassifier` (anything with predict_proba(texts)), or the
            (N, C) class probabilities one gave on the split's rows (`notebook.finetuned_probabilities`).
        task: a `tasks.TaskData`; its labels order the classes.
        split: "val" or "test".
    Returns:
        (one row per classifier: accuracy, macro precision/recall/F1, weighted F1, ECE, NLL...;
         name -> {"confusion": (C, C) counts, "bins": reliability bins, "ece": float, "probs": (N, C)}).
    """
    frame = task.split(split)
    texts, y = frame["text"].tolist(), frame["label_id"].to_numpy()
    rows, details = [], {}
    for name, clf in classifiers.items():
        probs = clf.predict_proba(texts) if hasattr(clf, "predict_proba") else np.asarray(clf, dtype=np.float64)
        if probs.shape != (len(texts), task.num_labels):
            raise ValueError(f"{name}: {probs.shape} probabilities for {len(texts)} {split} rows of "
                             f"{task.num_labels} classes; give one row per passage of the split")
        pred = probs.argmax(-1)
        metrics = classification_metrics(y, pred, task.labels, probs=probs, n_bins=n_bins)
        ece, bins = calibration(probs, y, n_bins)
        rows.append({"model": name, **metrics})
        details[name] = {"confusion": confusion(y, pred, task.num_labels), "bins": bins, "ece": ece, "probs": probs}
    return pd.DataFrame(rows), details


# =============================================================================================
# One pretraining run, end to end (python -m workbench evaluate)
# =============================================================================================


def evaluate_checkpoint(checkpoint: str | Path, split: str = "val", n_prompts: int = 20, prompt_chars: int = 200,
                        continuation_chars: int = 100, max_chars: int | None = None,
                        compression_chars: int = 20_000, sparsities: Sequence[float] = (0.25, 0.5, 0.75),
                        strategies: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                        device: str = "cpu") -> dict[str, Any]:
    """The evaluation card of a pretraining run on the held-out split of its own corpus.

    f"{split}_loss" is the loss of the whole split exactly as training evaluates it
    (`split_loss`): for "val" it equals the run's val_loss when training scored the whole split.
    For the plays, every held-out play is also scored on its own (`perplexity_by_document`) and
    "lm" combines them (`combine_lm_metrics`): a play's first token has no context and windows
    restart at each play, so its cross_entropy differs slightly from f"{split}_loss". For other
    corpora "lm" scores the split's text.

    Args:
        checkpoint: a pretraining run directory (or a checkpoint directory in it).
        split: "val" or "test" (plain-text corpora have no test split).
        n_prompts, prompt_chars, continuation_chars: the continuation task (0 prompts skips it).
        max_chars: in "lm", score only the first max_chars characters of each held-out play
            (of the split, for other corpora); None scores everything. f"{split}_loss" always
            scores the whole split.
        compression_chars: characters of the held-out text scored for each compression
            variant (0 skips compression).
        sparsities, strategies, seed: as in `compression_table` / `continuation_scores`.
        device: where LM scoring and generation run (compression is always CPU).
    Returns:
        a JSON-able dict (NaN as None): checkpoint, split, corpus, tokenizer, params,
        f"{split}_loss" (nats/token), lm (`lm_metrics`), documents (per held-out play, for the
        plays), generation (records of `continuation_scores`), compression (records of
        `compression_table`), timings_s.
    """
    from .pretrain import load_pretrained  # here: pretrain imports this module

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    for name, value in (("n_prompts", n_prompts), ("compression_chars", compression_chars)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 (0 skips that part), got {value}")
    if compression_chars == 1:  # lm_compression scores at least two characters
        raise ValueError("compression_chars must be 0 (skip compression) or at least 2, got 1")
    if max_chars is not None and max_chars < 2:
        raise ValueError(f"max_chars must be at least 2 (or unset to score everything), got {max_chars}")
    model, tokenizer, config = load_pretrained(checkpoint, device=device)
    corpus = load_corpus(config.data.corpus, text_column=config.data.text_column)
    if not corpus.splits[split]:
        raise ValueError(f"corpus {corpus.name!r} has no {split} split (only the plays have a test split); "
                         "use --split val")
    held_out = held_out_documents(corpus, max_chars)[split]
    docs = held_out if corpus.name == "shakespeare" else []  # each play on its own ("documents")
    text = join_documents(held_out)
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "split": split, "corpus": corpus.name,
                              "tokenizer": tokenizer.kind, "params": model.num_params()}

    t0 = time.perf_counter()
    result[f"{split}_loss"] = split_loss(model, tokenizer, config, split, device=device)
    if docs:
        per_doc = perplexity_by_document(model, tokenizer, docs)
        result["lm"] = combine_lm_metrics(per_doc)
        result["documents"] = per_doc.to_dict("records")
    else:
        result["lm"] = lm_metrics(model, tokenizer, text)
    timings["lm"] = time.perf_counter() - t0

    if n_prompts:
        t0 = time.perf_counter()
        task = continuation_task(docs or text, n_prompts, prompt_chars, continuation_chars, seed)
        result["generation"] = continuation_scores(model, tokenizer, task, strategies, seed).to_dict("records")
        timings["generation"] = time.perf_counter() - t0

    if compression_chars:
        t0 = time.perf_counter()
        table = lm_compression(model, tokenizer, text, compression_chars, sparsities, seed=seed)
        result["compression"] = table.to_dict("records")
        timings["compression"] = time.perf_counter() - t0
    result["timings_s"] = timings
    return json_safe(result)
