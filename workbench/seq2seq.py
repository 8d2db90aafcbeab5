"""The whole Transformer of "Attention Is All You Need": an encoder–decoder, and how it decodes.

The composition is the Annotated Transformer's: source and target embeddings, an `Encoder`
that reads the whole source with bidirectional self-attention, a `Decoder` that writes the
target with causal self-attention plus **cross-attention** over the encoder's output (its
"memory"), and an output layer tied to the target embedding. Blocks are pre-LayerNorm, as the
GPT's. Every attention — encoder, decoder self and cross — is one module, `Attention`, which
calls `workbench.model.attend` (fused SDPA, or the explicit softmax(QKᵀ/√d_k)·V path while
its `hook_pattern` is hooked and for single-query decode steps on CUDA or under torch.compile;
`attend`'s docstring says exactly when). Only the masks differ:

- encoder self-attention: every source position sees every non-pad source position;
- decoder self-attention: causal (a target position sees itself and earlier ones);
- cross-attention: every target position sees every non-pad source position; no causal mask,
  because the whole source is known before the first target token is written.

Sequences are right-padded with `pad_id`; the decoder reads `tgt_in` = BOS + target and learns
to predict `tgt_out` = target + EOS (`make_batch` builds the three tensors from id lists).

Taps (B batch, S source and T target positions, C = n_embd, nh heads of hs channels; T_k is T,
or every cached target position while decoding):

    encoder.h.{i}.attn.hook_pattern           (B, nh, S, S)    encoder self-attention weights
    encoder.h.{i}.attn.hook_z                 (B, S, nh, hs)   each head's output
    encoder.h.{i}.hook_resid_pre / hook_attn_out / hook_resid_mid / hook_mlp_out / hook_resid_post  (B, S, C)
    encoder.hook_ln_f                         (B, S, C)        the memory the decoder reads
    decoder.h.{i}.self_attn.hook_pattern      (B, nh, T, T_k)  causal self-attention weights
    decoder.h.{i}.cross_attn.hook_pattern     (B, nh, T, S)    cross-attention: target rows, source columns
    decoder.h.{i}.self_attn.hook_z, cross_attn.hook_z          (B, T, nh, hs)
    decoder.h.{i}.hook_resid_pre / hook_self_attn_out / hook_resid_mid / hook_cross_attn_out /
        hook_resid_cross / hook_mlp_out / hook_resid_post       (B, T, C)
    decoder.hook_ln_f                         (B, T, C)        into the output layer

`hooks()` and `run_with_cache(src, tgt_in, names)` work as the GPT's (`model.HookedModule`).

Training: `Trainer(model, ...)` calls `model(src, tgt_in, tgt_out)` (tgt_in = <bos> + target,
tgt_out = target + <eos>). `make_batch` builds them from lists of ids (`loss_evaluator`, the
validation loss; `cross_attentions`); `translator.seq2seq_train` slices its training batches from
the whole training set encoded once (`translation.encode_pairs`, tgt[:, :-1] and tgt[:, 1:]).

Decoding (the encoder runs once per source; each decoder layer's cross-attention keys and values
are computed once per source and its self-attention keys and values are cached, `DecoderCache`):
`generate` (greedy, or sampling with temperature / top-k / top-p), `beam_search` (width,
GNMT length penalty, EOS handling, n-best) and `translate`, which batches id lists of any length.
`save_seq2seq` / `load_seq2seq` write and read the safetensors + JSON checkpoint the GPT uses;
`cross_attention` gives one pair's weights (n_dec_layer, n_head, T, S) for figures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import torch
import torch.nn as nn
from torch.nn import functional as F

from . import checkpoint as ckpt
from .config import _check, _choice, check_types, from_dict
from .model import (GPT, MLP, HookedModule, HookPoint, KVCache, apply_rope, attend, check_sampling, eval_mode, rope_tables,
                    sample_next, sinusoidal_encoding)
from .run import load_final


@dataclass
class Seq2SeqConfig:
    """Shape of the encoder–decoder and its special tokens (defaults: the paper's choices, small)."""

    src_vocab_size: int = 64
    tgt_vocab_size: int = 64
    shared_embeddings: bool = False  # one vocabulary: source and target share the embedding (sizes must match)
    n_layer: int = 2  # encoder blocks
    n_dec_layer: int = 2  # decoder blocks
    n_head: int = 4
    n_embd: int = 128
    max_src_len: int = 64  # longest source, in tokens
    max_tgt_len: int = 32  # longest decoder input: BOS + target (so targets of up to max_tgt_len - 1 tokens)
    dropout: float = 0.1
    bias: bool = True
    pos_encoding: str = "sinusoidal"  # sinusoidal (the paper) | learned | rope (self-attention only)
    activation: str = "relu"  # relu (the paper) | gelu
    label_smoothing: float = 0.0  # the paper used 0.1
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("src_vocab_size", "tgt_vocab_size", "n_layer", "n_dec_layer", "n_head", "n_embd",
                     "max_src_len", "max_tgt_len"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        # the decoder reads <bos> + target: with 1 it learns only to write <eos> at once
        _check(self.max_tgt_len >= 2, f"max_tgt_len={self.max_tgt_len} leaves no room for a target token after <bos>; "
                                      "set max_tgt_len to the longest target's tokens + 1 (at least 2)")
        _check(self.n_embd % self.n_head == 0,
               f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; choose n_embd as a multiple of n_head")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1) (the paper used 0.1), "
                                                   f"got {self.label_smoothing}")
        _choice("pos_encoding", self.pos_encoding)
        _choice("activation", self.activation)
        if self.pos_encoding == "rope":
            _check(self.head_size % 2 == 0, f"rope needs an even head size, got n_embd/n_head={self.head_size}; "
                                            "change n_embd or n_head")
        _check(not self.shared_embeddings or self.src_vocab_size == self.tgt_vocab_size,
               f"shared_embeddings needs one vocabulary, got src_vocab_size={self.src_vocab_size} and "
               f"tgt_vocab_size={self.tgt_vocab_size}; set both to the shared tokenizer's size, "
               "or shared_embeddings=False")
        special = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        for name, value in special.items():
            _check(isinstance(value, int) and 0 <= value < self.tgt_vocab_size,
                   f"{name}={value!r} is not a token of the target vocabulary (0..{self.tgt_vocab_size - 1}); "
                   "use the tokenizer's special-token ids")
        _check(self.pad_id < self.src_vocab_size, f"pad_id={self.pad_id} is not a token of the source vocabulary "
                                                  f"(0..{self.src_vocab_size - 1}); use the tokenizer's pad id")
        _check(len(set(special.values())) == 3, f"pad_id, bos_id and eos_id must differ, got {special}; "
                                                "give each special token its own id")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


# ------------------------------------------------------------------- modules
class DecoderCache(KVCache):
    """What decoding keeps between steps, so each step feeds only the newest target token: the
    decoder's self-attention keys/values in a `model.KVCache` (the GPT's cache, preallocated to
    max_tgt_len; `pos` target positions filled, `reorder` follows beam search's survivors), plus

    cross: per decoder layer, the cross-attention (k, v) of the source, each (B, nh, S, hs), computed
        once (`Seq2Seq.start_cache`). `reorder` leaves them: each beam keeps decoding its own source.
    """

    def __init__(self, config: Seq2SeqConfig, cross: list[tuple[torch.Tensor, torch.Tensor]]):
        k = cross[0][0]
        super().__init__(config.n_dec_layer, k.size(0), config.n_head, config.max_tgt_len, config.head_size,
                         k.device, k.dtype)
        self.cross = cross


class Attention(nn.Module):
    """Multi-head attention of queries from x over keys and values from x (self) or the memory (cross).

    q comes from `c_q`, k and v from one matmul `c_kv`; the heads' outputs are joined by `c_proj`.
    Taps `hook_pattern` (B, nh, T, T_k) and `hook_z` (B, T, nh, hs).
    """

    def __init__(self, config: Seq2SeqConfig, causal: bool):
        super().__init__()
        self.n_head, self.causal = config.n_head, causal
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_kv = nn.Linear(config.n_embd, 2 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.hook_pattern = HookPoint()  # (B, nh, T, T_k)
        self.hook_z = HookPoint()  # (B, T, nh, hs)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """source (B, T_k, C) -> k, v, each (B, nh, T_k, hs)."""
        k, v = self.c_kv(source).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(self, x, kv=None, mask=None, rope=None, cache: DecoderCache | None = None, layer: int = 0):
        """x (B, T, C) -> (B, T, C).

        Args:
            x: the queries' inputs; for self-attention also the keys' and values' (after `cache.pos`
                cached positions when a cache is given).
            kv: cross-attention's (k, v) from `keys_values(memory)`; None for self-attention.
            mask: bool, broadcastable to (B, nh, T, T_k); True where a query may look (source padding).
            rope: (cos, sin) tables, rotating q and k of self-attention; cross-attention has none
                (target and source positions are not on one axis).
        """
        B, T, C = x.size()
        q = self.split_heads(self.c_q(x))  # (B, nh, T, hs)
        if kv is None:
            k, v = self.keys_values(x)
            start = cache.pos if cache is not None else 0
            if rope is not None:
                cos, sin = rope[0][start : start + T], rope[1][start : start + T]
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            if cache is not None:
                k, v = cache.update(layer, k, v)  # (B, nh, start+T, hs)
        else:
            k, v = kv  # (B, nh, S, hs)
        y = attend(q, k, v, mask, is_causal=self.causal, dropout=self.attn_dropout, pattern=self.hook_pattern)
        z = self.hook_z(y.transpose(1, 2))  # (B, T, nh, hs)
        return self.resid_dropout(self.c_proj(z.reshape(B, T, C)))


class Embedding(nn.Module):
    """Token embedding × √n_embd (as the paper) plus positions, then dropout.

    Positions are learned (`wpe`) or sinusoidal (a fixed table, not saved); with RoPE they are
    rotated into q and k by the self-attention instead.
    """

    def __init__(self, vocab_size: int, max_len: int, config: Seq2SeqConfig):
        super().__init__()
        self.pos_encoding, self.scale = config.pos_encoding, math.sqrt(config.n_embd)
        self.wte = nn.Embedding(vocab_size, config.n_embd)
        if config.pos_encoding == "learned":
            self.wpe = nn.Embedding(max_len, config.n_embd)
        if config.pos_encoding == "sinusoidal":
            self.register_buffer("pe", sinusoidal_encoding(max_len, config.n_embd), persistent=False)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """idx (B, T) token ids at positions start..start+T-1 -> (B, T, C)."""
        T = idx.size(1)
        x = self.wte(idx) * self.scale
        if self.pos_encoding == "learned":
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))
        elif self.pos_encoding == "sinusoidal":
            x = x + self.pe[start : start + T]
        return self.drop(x)


class EncoderBlock(nn.Module):
    """x + attn(ln(x)) over the whole source, then x + mlp(ln(x)); every stage tapped."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = Attention(config, causal=False)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x, mask, rope=None):
        """x (B, S, C), mask (B, 1, 1, S) True at source tokens -> (B, S, C)."""
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln_1(x), mask=mask, rope=rope)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln_2(x))))


class DecoderBlock(nn.Module):
    """x + self_attn(ln(x)) (causal), x + cross_attn(ln(x), memory), then x + mlp(ln(x))."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.hook_resid_pre = HookPoint()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.self_attn = Attention(config, causal=True)
        self.hook_self_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.cross_attn = Attention(config, causal=False)
        self.hook_cross_attn_out = HookPoint()
        self.hook_resid_cross = HookPoint()
        self.ln_3 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x, cross_kv, src_mask, rope=None, cache=None, layer=0):
        """x (B, T, C), cross_kv this layer's (k, v) of the memory, src_mask (B, 1, 1, S) -> (B, T, C)."""
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_self_attn_out(self.self_attn(self.ln_1(x), rope=rope, cache=cache,
                                                                           layer=layer)))
        x = self.hook_resid_cross(x + self.hook_cross_attn_out(self.cross_attn(self.ln_2(x), cross_kv, src_mask)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln_3(x))))


class Encoder(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.h = nn.ModuleList([EncoderBlock(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.hook_ln_f = HookPoint()

    def forward(self, x, mask, rope=None):
        """x (B, S, C) embedded source, mask (B, 1, 1, S) -> memory (B, S, C)."""
        for block in self.h:
            x = block(x, mask, rope)
        return self.hook_ln_f(self.ln_f(x))


class Decoder(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.h = nn.ModuleList([DecoderBlock(config) for _ in range(config.n_dec_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.hook_ln_f = HookPoint()

    def forward(self, x, cross_kv, src_mask, rope=None, cache=None):
        """x (B, T, C) embedded target, cross_kv one (k, v) per layer, src_mask (B, 1, 1, S) -> (B, T, C)."""
        for layer, block in enumerate(self.h):
            x = block(x, cross_kv[layer], src_mask, rope, cache, layer)
        return self.hook_ln_f(self.ln_f(x))


class Seq2Seq(HookedModule):
    """Encoder–decoder Transformer. `forward(src, tgt_in, tgt_out=None) -> (logits (B, T, V), loss or None)`.

    `encode` and `decode` are the two halves, for decoding; the taps are listed in the module docstring.
    """

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        self.src_embed = Embedding(config.src_vocab_size, config.max_src_len, config)
        self.tgt_embed = Embedding(config.tgt_vocab_size, config.max_tgt_len, config)
        if config.shared_embeddings:
            self.tgt_embed.wte = self.src_embed.wte
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.lm_head = nn.Linear(config.n_embd, config.tgt_vocab_size, bias=False)
        self.lm_head.weight = self.tgt_embed.wte.weight  # tied, as the paper
        if config.pos_encoding == "rope":
            cos, sin = rope_tables(max(config.max_src_len, config.max_tgt_len), config.head_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.name_hook_points()
        # GPT-2 initialisation; each residual projection scaled by 1/sqrt(residual additions in its stack)
        self.apply(GPT._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                adds = 2 * config.n_layer if name.startswith("encoder.") else 3 * config.n_dec_layer
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(adds))

    def _rope(self):
        return (self.rope_cos, self.rope_sin) if self.config.pos_encoding == "rope" else None

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Read the sources.

        Args:
            src: (B, S) token ids, right-padded with pad_id, S <= max_src_len; every row needs a
                non-pad token (`pad_sources` checks that).
        Returns:
            memory (B, S, C) and src_mask (B, S) bool, True at real (non-pad) tokens.
        """
        S = src.size(1)
        if S > self.config.max_src_len:
            raise ValueError(f"source of length {S} exceeds max_src_len={self.config.max_src_len}; "
                             "shorten the source or train with a larger max_src_len")
        src_mask = src != self.config.pad_id
        memory = self.encoder(self.src_embed(src), src_mask[:, None, None, :], self._rope())
        return memory, src_mask

    def start_cache(self, memory: torch.Tensor, repeat: int = 1) -> DecoderCache:
        """An empty decoding cache holding every layer's cross-attention k, v of `memory` (B, S, C),
        computed once; `repeat` copies each source's rows (one per beam): (B * repeat, nh, S, hs)."""
        cross = [block.cross_attn.keys_values(memory) for block in self.decoder.h]
        if repeat > 1:
            cross = [(k.repeat_interleave(repeat, 0), v.repeat_interleave(repeat, 0)) for k, v in cross]
        return DecoderCache(self.config, cross)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               cache: DecoderCache | None = None) -> torch.Tensor:
        """Next-token logits of every target position.

        Args:
            tgt_in: (B, T) decoder inputs (BOS + target so far), right-padded; with a cache, only
                the positions after the cached ones (and the cache advances by T).
            memory: (B, S, C) from `encode`; unused with a cache (its cross-attention k, v are cached).
            src_mask: (B, S) from `encode`.
            cache: a `start_cache(memory)` for step-by-step decoding, or None.
        Returns:
            logits (B, T, tgt_vocab_size).
        """
        T = tgt_in.size(1)
        start = cache.pos if cache is not None else 0
        if start + T > self.config.max_tgt_len:
            raise ValueError(f"decoder input of length {start + T} exceeds max_tgt_len={self.config.max_tgt_len}; "
                             "shorten the target or train with a larger max_tgt_len")
        if cache is not None:
            cross = cache.cross
        else:
            cross = [block.cross_attn.keys_values(memory) for block in self.decoder.h]
        x = self.decoder(self.tgt_embed(tgt_in, start), cross, src_mask[:, None, None, :], self._rope(), cache)
        if cache is not None:
            cache.pos += T
        return self.lm_head(x)

    def forward(self, src, tgt_in, tgt_out=None):
        """Logits of every target position, and the loss when tgt_out is given.

        Args:
            src: (B, S) source ids; tgt_in: (B, T) BOS + target; tgt_out: (B, T) target + EOS.
                All right-padded with pad_id (`make_batch`); pad targets are ignored by the loss.
        Returns:
            (logits (B, T, tgt_vocab_size), the mean cross-entropy over non-pad targets, or None).
            With label_smoothing ε the target gets 1-ε and ε is spread over the whole vocabulary
            (`F.cross_entropy`'s smoothing).
        """
        memory, src_mask = self.encode(src)
        logits = self.decode(tgt_in, memory, src_mask)
        loss = None
        if tgt_out is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), tgt_out.reshape(-1),
                                   ignore_index=self.config.pad_id, label_smoothing=self.config.label_smoothing)
        return logits, loss

    def run_with_cache(self, src, tgt_in, names: Iterable[str] | Callable[[str], bool] | None = None):
        """Run the model on (src, tgt_in) and keep what the named taps saw.

        Args:
            src: (B, S), tgt_in: (B, T) as `forward` takes them.
            names: None for every tap, a list of names, or a predicate on names.
        Returns:
            (logits (B, T, tgt_vocab_size), {name: detached tensor}, shapes in the module docstring).
        """
        (logits, _), cache = self._run_with_cache(names, src, tgt_in)
        return logits, cache

    def num_params(self) -> int:
        """Number of parameters (tied and shared weights counted once)."""
        return sum(p.numel() for p in self.parameters())


# ------------------------------------------------------------------- batches
def pad_sources(sources: Sequence[Sequence[int]], config: Seq2SeqConfig, device=None) -> torch.Tensor:
    """Source id lists -> (B, S) right-padded with pad_id, S = the longest source.

    Raises:
        ValueError: for no sources, an empty source, or one longer than max_src_len.
    """
    if len(sources) == 0:
        raise ValueError("no sources given; pass a list of token-id lists")
    for i, ids in enumerate(sources):
        if len(ids) == 0:
            raise ValueError(f"source {i} is empty; drop empty sources before translating")
        if len(ids) > config.max_src_len:
            raise ValueError(f"source {i} has {len(ids)} tokens, more than max_src_len={config.max_src_len}; "
                             "shorten it or train with a larger max_src_len")
    src = torch.full((len(sources), max(map(len, sources))), config.pad_id, dtype=torch.long)
    for i, ids in enumerate(sources):
        src[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return src.to(device) if device is not None else src


def make_batch(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], config: Seq2SeqConfig,
               device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of id lists -> the (src, tgt_in, tgt_out) that `Seq2Seq.forward` and the `Trainer` take.

    tgt_in = BOS + target and tgt_out = target + EOS, right-padded with pad_id (ignored by the loss).

    Returns:
        src (B, S), tgt_in (B, T), tgt_out (B, T), T = longest target + 1.
    Raises:
        ValueError: for unequal counts, an empty source, or a source or target too long for the config.
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets; give one target per source")
    src = pad_sources(sources, config, device)
    T = max(map(len, targets)) + 1
    if T > config.max_tgt_len:
        raise ValueError(f"a target of {T - 1} tokens needs max_tgt_len >= {T} (BOS + target); "
                         f"it is {config.max_tgt_len}: shorten the targets or raise max_tgt_len")
    tgt_in = torch.full((len(targets), T), config.pad_id, dtype=torch.long)
    tgt_out = torch.full((len(targets), T), config.pad_id, dtype=torch.long)
    for i, ids in enumerate(targets):
        ids = torch.as_tensor(list(ids), dtype=torch.long)
        tgt_in[i, 0], tgt_in[i, 1 : len(ids) + 1] = config.bos_id, ids
        tgt_out[i, : len(ids)], tgt_out[i, len(ids)] = ids, config.eos_id
    return src, tgt_in.to(src.device), tgt_out.to(src.device)


def loss_evaluator(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], config: Seq2SeqConfig,
                   batch_size: int = 64, device=None) -> Callable[[nn.Module], dict[str, float]]:
    """The `Trainer`'s `evaluate` for held-out pairs: model -> {"val_loss": mean NLL per target token}.

    Every pair is read (batched, in order); each target token and EOS counts once, pads not at all.
    Plain cross-entropy, without label smoothing, so runs with and without smoothing compare.
    """
    batches = [make_batch(sources[i : i + batch_size], targets[i : i + batch_size], config, device)
               for i in range(0, len(sources), batch_size)]

    def evaluate(model: nn.Module) -> dict[str, float]:
        total, count = 0.0, 0
        for src, tgt_in, tgt_out in batches:
            logits, _ = model(src, tgt_in)
            total += F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=config.pad_id,
                                     reduction="sum").item()
            count += int((tgt_out != config.pad_id).sum())
        return {"val_loss": total / count}

    return evaluate


def strip_special(ids: Sequence[int], config: Seq2SeqConfig) -> list[int]:
    """A decoded row as a plain id list: everything before the first EOS (or pad)."""
    out = []
    for i in ids:
        if i in (config.eos_id, config.pad_id):
            break
        out.append(int(i))
    return out


# ------------------------------------------------------------------ decoding
def _max_len(max_len: int | None, config: Seq2SeqConfig) -> int:
    if max_len is None:
        return config.max_tgt_len
    if not 1 <= max_len <= config.max_tgt_len:
        raise ValueError(f"max_len={max_len} must be in 1..max_tgt_len={config.max_tgt_len}; lower max_len")
    return max_len


def next_log_probs(logits: torch.Tensor, config: Seq2SeqConfig) -> torch.Tensor:
    """Log-probabilities (..., V) of the next token over the tokens a decoder may write: pad and
    BOS are never written, so they get -inf and the rest is renormalised. Every decoding function
    (and a test's exhaustive search) scores tokens with this."""
    logits = logits.float().clone()
    logits[..., [config.pad_id, config.bos_id]] = float("-inf")
    return F.log_softmax(logits, dim=-1)


def generate(model: Seq2Seq, src: torch.Tensor, max_len: int | None = None, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             use_cache: bool = True) -> torch.Tensor:
    """Decode each source token by token: greedy (temperature=0) or sampled (`model.sample_next`).

    The encoder runs once. With the cache each step feeds only the newest token (the uncached path
    re-reads the whole prefix: same tokens, for tests). A row stops at its EOS (pad after it); the
    loop stops when every row has stopped or max_len tokens are written.

    Args:
        src: (B, S) source ids, right-padded (`pad_sources`).
        max_len: most tokens to write per row, EOS included (default max_tgt_len).
        temperature, top_k, top_p, seed: as `GPT.generate`.
    Returns:
        (B, L) written ids, L <= max_len: tokens, EOS, then pad_id.
    """
    check_sampling(temperature, top_k, top_p)
    cfg = model.config
    max_len = _max_len(max_len, cfg)
    generator = torch.Generator(device=src.device).manual_seed(seed) if seed is not None else None
    with eval_mode(model), torch.no_grad():
        memory, src_mask = model.encode(src)
        cache = model.start_cache(memory) if use_cache else None
        out = torch.full((src.size(0), 1), cfg.bos_id, dtype=torch.long, device=src.device)  # (B, 1 + written)
        done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            logits = model.decode(out[:, -1:] if use_cache else out, memory, src_mask, cache)[:, -1]  # (B, V)
            token = sample_next(next_log_probs(logits, cfg), temperature, top_k, top_p, generator)  # (B, 1)
            token = token.masked_fill(done[:, None], cfg.pad_id)
            out = torch.cat([out, token], dim=1)
            done |= token[:, 0] == cfg.eos_id
            if done.all():
                break
    return out[:, 1:]


def greedy(model: Seq2Seq, src: torch.Tensor, max_len: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """`generate` with temperature 0: the likeliest token at every step. (B, S) -> (B, L)."""
    return generate(model, src, max_len, temperature=0.0, use_cache=use_cache)


class Hypothesis(NamedTuple):
    """One finished beam: `tokens` without BOS/EOS, `log_prob` the sum of its tokens' (and its
    EOS's) log-probabilities, `score` = log_prob / length_penalty(len), what beam search ranks by."""

    tokens: list[int]
    score: float
    log_prob: float


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016); alpha=0 ranks by raw log-probability,
    larger alpha favours longer outputs. |Y| counts the written tokens, EOS included."""
    return ((5 + length) / 6) ** alpha


def beam_search(model: Seq2Seq, src: torch.Tensor, beam: int = 4, max_len: int | None = None,
                alpha: float = 0.6, n_best: int = 1, use_cache: bool = True) -> list[list[Hypothesis]]:
    """Keep the `beam` likeliest prefixes of each source at every step; return the best finished ones.

    Each step extends every live beam by every token and keeps, per source, the 2·beam best
    candidates by log-probability: one ending in EOS among the best `beam` becomes a finished
    hypothesis (scored with the length penalty), the best `beam` others live on. At max_len the
    best candidates finish unended. A source stops once it has n_best hypotheses and no live beam
    can still beat them: a live beam's log-probability only falls, and lp grows to lp(max_len) at
    most, so none can score above best_live / lp(max_len). The encoder runs once per source, each
    cross-attention k, v once per source (copied per beam), and the self-attention cache is
    reordered to follow the surviving beams. Width 1 with alpha=0 is greedy decoding.

    Args:
        src: (B, S) source ids, right-padded.
        beam: width (>= 1).
        max_len: most tokens to write, EOS included (default max_tgt_len).
        alpha: GNMT length penalty (`length_penalty`); 0 ranks by log-probability.
        n_best: hypotheses returned per source (<= beam).
    Returns:
        per source, n_best `Hypothesis`es, best first.
    """
    cfg = model.config
    K, max_len = beam, _max_len(max_len, cfg)
    if not (isinstance(K, int) and K >= 1):
        raise ValueError(f"beam must be a positive integer, got {beam!r}")
    if not 1 <= n_best <= K:
        raise ValueError(f"n_best={n_best} must be in 1..beam={K}; raise beam or lower n_best")
    if alpha < 0:
        raise ValueError(f"alpha (length penalty) must be >= 0, got {alpha}")
    B, dev = src.size(0), src.device
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B
    with eval_mode(model), torch.no_grad():
        memory, src_mask = model.encode(src)  # once per source
        cache = model.start_cache(memory, repeat=K) if use_cache else None
        memory, src_mask = memory.repeat_interleave(K, 0), src_mask.repeat_interleave(K, 0)  # (B*K, S, ...)
        seqs = torch.full((B * K, 1), cfg.bos_id, dtype=torch.long, device=dev)  # BOS + written, per beam
        scores = torch.full((B, K), float("-inf"), device=dev)
        scores[:, 0] = 0.0  # one live beam per source at first, so no prefix is kept twice
        for t in range(1, max_len + 1):
            logits = model.decode(seqs[:, -1:] if use_cache else seqs, memory, src_mask, cache)[:, -1]
            logp = next_log_probs(logits, cfg).view(B, K, -1)  # (B, K, V)
            V = logp.size(-1)
            cand = (scores[:, :, None] + logp).view(B, K * V)
            top, idx = cand.topk(min(2 * K, K * V), dim=1)  # (B, 2K): K live ones survive even if K end here
            top, origin, token = top.tolist(), (idx // V).tolist(), (idx % V).tolist()
            new_scores = torch.full((B, K), float("-inf"))
            new_origin = torch.zeros((B, K), dtype=torch.long)
            new_token = torch.full((B, K), cfg.pad_id, dtype=torch.long)
            for b in range(B):
                if done[b]:
                    continue  # its rows decode padding at -inf until every source is done
                live = 0
                for rank, (s, o, tok) in enumerate(zip(top[b], origin[b], token[b])):
                    if s == float("-inf") or live == K:
                        break
                    if tok == cfg.eos_id or t == max_len:
                        if rank < K:  # an ending counts only among the beam's best candidates
                            tokens = seqs[b * K + o, 1:].tolist() + ([] if tok == cfg.eos_id else [tok])
                            finished[b].append(Hypothesis(tokens, s / length_penalty(t, alpha), s))
                    else:
                        new_scores[b, live], new_origin[b, live], new_token[b, live] = s, o, tok
                        live += 1
                # done: nothing left alive, or n_best finished that no live beam can still beat
                ceiling = new_scores[b, 0].item() / length_penalty(max_len, alpha)
                kept = sorted((h.score for h in finished[b]), reverse=True)
                done[b] = live == 0 or (len(kept) >= n_best and kept[n_best - 1] >= ceiling)
            if all(done):
                break
            rows = (torch.arange(B)[:, None] * K + new_origin).view(-1).to(dev)  # (B*K,) each survivor's parent
            seqs = torch.cat([seqs.index_select(0, rows), new_token.view(-1, 1).to(dev)], dim=1)
            scores = new_scores.to(dev)
            if cache is not None:
                cache.reorder(rows)
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in finished]


def translate(model: Seq2Seq, sources: Sequence[Sequence[int]], beam: int | None = None,
              max_len: int | None = None, alpha: float = 0.6, batch_size: int = 64, **sampling: Any) -> list[list[int]]:
    """Decode many sources of any lengths, in batches of similar length (less padding).

    Args:
        sources: token-id lists (no BOS/EOS), each 1..max_src_len long.
        beam: None decodes greedily (or samples, given `sampling`: temperature, top_k, top_p, seed);
            N runs `beam_search` of width N with length penalty `alpha`.
        max_len: most tokens to write, EOS included (default max_tgt_len).
        batch_size: sources decoded together.
    Returns:
        each source's output ids, without BOS/EOS, in the order of `sources`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if beam is not None and sampling:
        raise ValueError(f"beam search does not sample; drop {', '.join(sampling)} or beam")
    device = next(model.parameters()).device
    pad_sources(sources, model.config)  # check every source before decoding any
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src = pad_sources([sources[i] for i in chunk], model.config, device)
        if beam is None:
            rows = generate(model, src, max_len, **{"temperature": 0.0, **sampling}).tolist()
            decoded = [strip_special(row, model.config) for row in rows]
        else:
            decoded = [hyps[0].tokens for hyps in beam_search(model, src, beam, max_len, alpha)]
        for i, ids in zip(chunk, decoded):
            outputs[i] = ids
    return outputs


# --------------------------------------------------------------- inspection
def cross_attention(model: Seq2Seq, src: Sequence[int], tgt: Sequence[int]) -> torch.Tensor:
    """Cross-attention weights of one (source, target) pair, for figures.

    The decoder reads BOS + tgt; row i is the step that wrote tgt[i], and the last row the step
    that wrote EOS, so rows line up with `list(tgt) + [EOS]`.

    Args:
        src: source ids (no padding); tgt: target ids (no BOS/EOS).
    Returns:
        (n_dec_layer, n_head, len(tgt) + 1, len(src)) float32 on the CPU; every row sums to one.
    """
    return cross_attentions(model, [src], [tgt])[0]


def cross_attentions(model: Seq2Seq, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]
                     ) -> list[torch.Tensor]:
    """`cross_attention` of many pairs in one padded forward pass: source padding gets no weight and
    the decoder is causal, so each pair's weights are those it has alone (to float rounding)."""
    cfg = model.config
    device = next(model.parameters()).device
    src_t, tgt_in, _ = make_batch(sources, targets, cfg, device)
    names = [f"decoder.h.{i}.cross_attn.hook_pattern" for i in range(cfg.n_dec_layer)]
    with eval_mode(model), torch.no_grad():
        _, cache = model.run_with_cache(src_t, tgt_in, names)
    weights = torch.stack([cache[name] for name in names], dim=1).float().cpu()  # (B, layers, heads, T, S)
    return [weights[i, :, :, : len(tgt) + 1, : len(src)] for i, (src, tgt) in enumerate(zip(sources, targets))]


# -------------------------------------------------------------- checkpoints
def save_seq2seq(model: Seq2Seq, path: str | Path, artifacts: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory: model.safetensors and config.json (its "model" section is the
    Seq2SeqConfig), plus each artifact as <name>.json (tokenizers, ...); a "config" artifact of your
    own (a run's config with a "model" section) replaces the default config.json.

    Returns:
        the checkpoint directory.
    """
    artifacts = {"config": {"model": asdict(model.config)}, **(artifacts or {})}
    if asdict(model.config) != artifacts["config"].get("model"):
        raise ValueError("the config artifact's 'model' section differs from model.config; "
                         "save asdict(model.config) under config['model']")
    return ckpt.save_checkpoint(path, model, artifacts)


def load_seq2seq(path: str | Path, device: str | torch.device = "cpu") -> tuple[Seq2Seq, dict[str, Any]]:
    """Load an encoder–decoder from a checkpoint directory or a run directory (its model/ folder).

    Returns:
        (model in eval mode on `device`, the checkpoint's artifacts {name: JSON content}).
    Raises:
        FileNotFoundError / DamagedCheckpointError: no checkpoint there, or a damaged file.
        ValueError: the checkpoint's config.json has no "model" section of a Seq2SeqConfig.
    """
    c = load_final(path, ("config",), "point at an encoder–decoder checkpoint (save_seq2seq, seq2seq-train --out)",
                   "python -m workbench seq2seq-train --out DIR")
    return seq2seq_from_checkpoint(c).to(device).eval(), c.artifacts


def seq2seq_from_checkpoint(c: ckpt.Checkpoint) -> Seq2Seq:
    """The encoder–decoder of a loaded checkpoint, built from its config.json and holding its weights.

    Raises:
        ValueError: config.json has no encoder–decoder "model" section (another kind of checkpoint).
        DamagedCheckpointError: a field of that section is wrong, or the weights do not fit it.
    """
    section = c.artifacts["config"].get("model") if isinstance(c.artifacts["config"], dict) else None
    if not isinstance(section, dict) or "tgt_vocab_size" not in section:
        raise ValueError(f"{c.path}/config.json holds no encoder–decoder 'model' section; "
                         "point at a checkpoint written by save_seq2seq or seq2seq-train")
    model = Seq2Seq(c.artifact("config", lambda config: from_dict(Seq2SeqConfig, config["model"])))
    c.load_weights(model)
    return model
