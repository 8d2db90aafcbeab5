"""Model compression and what it costs: dynamic int8 quantization and magnitude pruning.

`compression_table` builds the variants of a model (float, int8, pruned at each sparsity) and
measures each one's size on disk (raw and zipped), CPU throughput (the variants run in turns, so
a busy machine slows them alike) and, given the functions, the change in perplexity and in
classification macro-F1. `classifier_compression` does it for a fine-tuned classifier.

Both act on the Linear weights only (`compressible_linears`): embeddings, LayerNorms, biases and
an output head tied to the token embedding stay float, so int8 shrinks a model's file to a
quarter only in the share of it that `compressible_share` gives.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .metrics import macro_f1
from .model import eval_mode


def compressible_linears(model: nn.Module) -> list[str]:
    """Names of the nn.Linear modules that quantization and pruning act on.

    Every Linear except one whose weight IS an embedding's weight (GPT's output head tied to
    the token embedding): compressing it would change the embedding too (pruning) or store a
    second copy of it (quantization), so tied heads stay float.
    """
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and id(m.weight) not in embedding_weights]


def compressible_share(model: nn.Module) -> float:
    """Share of the model's parameters that quantization and pruning act on: the weights of its
    `compressible_linears`, over every parameter (a tied weight counted once).

    The rest (embeddings, LayerNorms, biases, a tied output head) stays float, so the int8 file is
    about 1 - 0.75 * share of the float one, not a quarter of it.
    """
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
    if total == 0:
        raise ValueError("the model has no parameters; pass a trained model")
    return sum(model.get_submodule(n).weight.numel() for n in compressible_linears(model)) / total


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of the model on CPU with dynamic int8 quantization of its `compressible_linears`.

    Weights are stored as int8 with a per-tensor scale; activations are quantized on the fly
    at each call (`torch.ao.quantization.quantize_dynamic`, CPU only). In torch 2.13 this API
    still works but warns that torch.ao.quantization is deprecated in favour of torchao's
    `quantize_` (not a dependency here); those deprecation warnings are silenced in this call.
    """
    from torch.ao.quantization import quantize_dynamic

    names = set(compressible_linears(model))
    if not names:
        raise ValueError("the model has no Linear layers to quantize")
    cpu = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated", category=UserWarning)
        return quantize_dynamic(cpu, names, dtype=torch.qint8)


def prune_linears(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy of the model with the smallest-magnitude `sparsity` fraction of its Linear weights set to 0.

    Global L1 unstructured pruning (`torch.nn.utils.prune.global_unstructured`) over the
    weights of all `compressible_linears` together (so layers lose different fractions), then
    `prune.remove` makes it permanent: plain dense weights with zeros, no masks left. Biases
    are kept. Dense zeros neither shrink the file nor speed up dense kernels; only a sparse
    format or a compressor (see `zipped_mb` in `compression_table`) turns them into savings.
    """
    from torch.nn.utils import prune

    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}; e.g. 0.5 prunes half the weights")
    pruned = copy.deepcopy(model)
    modules = [pruned.get_submodule(name) for name in compressible_linears(pruned)]
    if not modules:
        raise ValueError("the model has no Linear layers to prune")
    params = [(m, "weight") for m in modules]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    for m, name in params:
        prune.remove(m, name)
    return pruned


def linear_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all `compressible_linears` (float models)."""
    weights = [model.get_submodule(n).weight for n in compressible_linears(model)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(total, 1)


def _is_quantized(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def serialized_bytes(model: nn.Module) -> bytes:
    """The model's weights as they would be stored: a safetensors file (tied tensors once) for
    float models; for quantized modules (which safetensors cannot hold) torch.save of the
    state_dict, used only to measure size, never to load anything."""
    if _is_quantized(model):
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        return buf.getvalue()
    from safetensors.torch import save_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_model(model, str(path))
        return path.read_bytes()


@torch.no_grad()
def throughput(models: Sequence[nn.Module], idx: torch.Tensor | tuple, runs: int = 5) -> list[float]:
    """Forward-pass tokens per second of each model on a fixed batch idx (B, T).

    idx may be a tuple of forward arguments whose first is the (B, T) ids (a classifier's
    `(idx, lengths)`).

    The models are timed in turns (one forward of each, `runs` rounds, after one warm-up round),
    so a burst of load from other processes slows all of them alike; each gets B*T / its median
    time. On a small shared CPU, compare the numbers of one call, not of separate calls.
    """
    args = idx if isinstance(idx, tuple) else (idx,)
    with contextlib.ExitStack() as stack:  # every model in eval mode, each one's mode restored after
        for m in models:
            stack.enter_context(eval_mode(m))
            m(*args)  # warm-up
        times: list[list[float]] = [[] for _ in models]
        for _ in range(runs):
            for m, t in zip(models, times):
                t0 = time.perf_counter()
                m(*args)
                t.append(time.perf_counter() - t0)
    return [args[0].numel() / float(np.median(t)) for t in times]


def compression_table(model: nn.Module, eval_fn: Callable[[nn.Module], float] | None,
                      sparsities: Sequence[float] = (0.25, 0.5, 0.75), quantize: bool = True,
                      classify: Callable[[nn.Module], float] | None = None, example_input: torch.Tensor | None = None,
                      batch_size: int = 8, runs: int = 5, seed: int = 0) -> pd.DataFrame:
    """Size, CPU speed and quality of the model, int8-quantized, and pruned at several sparsities.

    Everything runs on CPU (dynamic quantization exists only there), on copies of the model.

    Args:
        model: the float model (a GPT, or any module `eval_fn` and `classify` accept).
        eval_fn: model -> held-out perplexity, e.g.
            `lambda m: lm_metrics(m, tok, val_text[:20_000])["perplexity"]`; None leaves the
            perplexity columns out (a classifier scored by `classify` alone).
        sparsities: fractions of Linear weights to prune, one row each.
        quantize: include the dynamic int8 row.
        classify: optional model -> classification macro-F1 (adds macro_f1 and delta_macro_f1).
        example_input: the (B, T) ids timed for tokens_per_s (or a tuple of forward arguments);
            default `batch_size` random sequences of block_size ids from `seed` (plus full lengths
            for a classifier with a `.backbone`).
        runs: timed forward passes of each variant (median; variants timed in turns).
    Returns:
        one row per variant (baseline, int8, prune-25%, ...): variant, size_mb (the stored
        weights: safetensors, or torch.save for int8), zipped_mb (that file through zlib:
        where pruning's zeros pay off), sparsity (share of zero Linear weights), tokens_per_s,
        perplexity, delta_perplexity (vs baseline) [, macro_f1, delta_macro_f1].
    """
    base = copy.deepcopy(model).cpu().eval()
    if example_input is None:
        g = torch.Generator().manual_seed(seed)
        gpt = getattr(base, "backbone", base)
        cfg = gpt.config
        example_input = torch.randint(cfg.vocab_size, (batch_size, cfg.block_size), generator=g)
        if gpt is not base:  # a classifier: forward(idx, lengths)
            example_input = (example_input, torch.full((batch_size,), cfg.block_size))
    if isinstance(example_input, tuple):
        example_input = tuple(t.cpu() for t in example_input)
    else:
        example_input = example_input.cpu()
    variants: list[tuple[str, Callable[[], nn.Module]]] = [("baseline", lambda: base)]
    if quantize:
        variants.append(("int8", lambda: quantize_int8(base)))
    for s in sparsities:
        variants.append((f"prune-{round(100 * s)}%", lambda s=s: prune_linears(base, s)))
    models, rows = [], []
    for name, build in variants:
        m = build()
        blob = serialized_bytes(m)
        row = {"variant": name, "size_mb": len(blob) / 1e6, "zipped_mb": len(zlib.compress(blob, 6)) / 1e6,
               "sparsity": float("nan") if _is_quantized(m) else linear_sparsity(m)}
        if eval_fn is not None:
            row["perplexity"] = float(eval_fn(m))
        if classify is not None:
            row["macro_f1"] = float(classify(m))
        models.append(m)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["tokens_per_s"] = throughput(models, example_input, runs)  # in turns: fair on a busy CPU
    cols = ["variant", "size_mb", "zipped_mb", "sparsity", "tokens_per_s"]
    if eval_fn is not None:
        df["delta_perplexity"] = df["perplexity"] - df["perplexity"].iloc[0]
        cols += ["perplexity", "delta_perplexity"]
    if classify is not None:
        df["delta_macro_f1"] = df["macro_f1"] - df["macro_f1"].iloc[0]
        cols += ["macro_f1", "delta_macro_f1"]
    return df[cols]


def classifier_compression(classifier, task, split: str = "test", sparsities: Sequence[float] = (0.25, 0.5, 0.75),
                           max_examples: int | None = None, runs: int = 5, seed: int = 0) -> pd.DataFrame:
    """`compression_table` for a fine-tuned classifier: size, speed and macro-F1 of each variant on a split.

    Args:
        classifier: a `finetune.TextClassifier` (its `.model` is compressed, its tokenizer shared).
        task: a `tasks.TaskData`.
        split: the split scored.
        max_examples: score a sample of this many passages of the split, drawn at random with `seed`
            (kept in the split's order); None scores them all. A random sample, not the first rows:
            a split lists its passages play by play, so its first rows over-represent some labels.
        runs: timed forward passes of each variant.
        seed: the sample's seed.
    Returns:
        `compression_table`'s rows with macro_f1 and delta_macro_f1, and n: the passages scored
        (the same for every row).
    """
    frame = task.split(split)
    if max_examples is not None:
        if max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 (or None for the whole split), got {max_examples}")
        if max_examples < len(frame):
            frame = frame.sample(n=max_examples, random_state=seed).sort_index()
    texts, y = frame["text"].tolist(), frame["label_id"].to_numpy()

    def score(model) -> float:
        variant = copy.copy(classifier)  # shares tokenizer and labels
        variant.model = model
        return macro_f1(y, variant.predict_proba(texts).argmax(-1), task.num_labels)

    example = tuple(classifier.encode(texts[:8]))  # (idx, lengths) of real passages, for the speed column
    table = compression_table(classifier.model, None, sparsities, classify=score, example_input=example, runs=runs)
    return table.assign(n=len(texts))
