"""A GPT decoder you can train fast and look inside.

The layout follows nanoGPT and GPT-2 (parameter names map key for key onto Hugging
Face's `GPT2LMHeadModel`): token embedding, a positional encoding (`learned`,
`sinusoidal` or `rope`), `n_layer` pre-LayerNorm blocks of causal multi-head
self-attention and an MLP, a final LayerNorm and a (tied) output projection.

Looking inside goes through named taps, `HookPoint`s (as in TransformerLens): identity
modules whose forward hooks see, and may replace, the tensor passing through. Their names
are module paths; for block i (B batch, T positions, C = n_embd, nh heads of hs channels,
T_k keys: T; during generation the cached positions, or all block_size slots of the cache in
`workbench.generate`'s fixed-shape decode step, the unfilled ones weighted 0):

    transformer.h.{i}.hook_resid_pre     (B, T, C)        residual stream into the block
    transformer.h.{i}.attn.hook_pattern  (B, nh, T, T_k)  attention weights after the softmax
    transformer.h.{i}.attn.hook_z        (B, T, nh, hs)   each head's output, before c_proj
    transformer.h.{i}.hook_attn_out      (B, T, C)        attention's output (after c_proj)
    transformer.h.{i}.hook_resid_mid     (B, T, C)        resid_pre + attn_out
    transformer.h.{i}.hook_mlp_out       (B, T, C)        the MLP's output
    transformer.h.{i}.hook_resid_post    (B, T, C)        resid_mid + mlp_out, into block i+1
    hook_ln_f                            (B, T, C)        final LayerNorm output, into lm_head

`with model.hooks([(name, fn), ...]):` adds hooks for the duration of a block;
`model.run_with_cache(idx)` returns the logits and the tapped tensors by name.

Attention is one function, `attend`, which every kind of attention calls (the encoder–decoder's
bidirectional and cross-attention too). It has two paths that compute the same thing:
- the fused path, `F.scaled_dot_product_attention`, used for training and for most inference;
- the explicit path, softmax(QKᵀ/√d_k)·V written out, used while something is hooked on
  `attn.hook_pattern` (the fused kernel never forms the weights; taps cost nothing when
  unused), and for single-query decode steps on CUDA or under torch.compile, where it is
  faster (`attend`'s docstring says exactly when).
`tests/test_model.py` proves they give the same logits and that the mask is causal.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.modules.module as _module_impl
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import ModelConfig


class HookPoint(nn.Module):
    """An identity tap: hooks registered on it see the tensor passing through and may replace it.

    `name` is its module path in the model (set by `HookedModule.name_hook_points`),
    e.g. "transformer.h.0.attn.hook_z".
    """

    def __init__(self):
        super().__init__()
        self.name = ""

    @property
    def hooked(self) -> bool:
        """Whether any hook is registered (checked per forward: a dict lookup, no tensor work)."""
        return bool(self._forward_hooks or self._forward_pre_hooks)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Unhooked, a tap is a bare identity: no nn.Module call machinery. A batch-1 decode step makes
        # 25 tap calls in the baby GPT; skipping the machinery made eager cached decoding ~5% faster.
        # Any hook on the tap (forward or backward), or on every module
        # (`register_module_forward_hook` and the like), takes the module call.
        if self.hooked or self._backward_hooks or self._backward_pre_hooks or _global_module_hooks():
            return super().__call__(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _global_module_hooks() -> bool:
    """Whether hooks are registered for every module (`torch.nn.modules.module.register_module_forward_hook`,
    `register_module_full_backward_hook`, ...)."""
    return bool(_module_impl._global_forward_hooks or _module_impl._global_forward_pre_hooks
                or _module_impl._global_backward_hooks or _module_impl._global_backward_pre_hooks)


def _plain_linear(module: nn.Module) -> bool:
    """An `nn.Linear` itself (not a LoRA wrapper) that no hook watches: its weight may be used directly."""
    return type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks or _global_module_hooks())


def sinusoidal_encoding(n_pos: int, dim: int) -> torch.Tensor:
    """The fixed encoding of "Attention Is All You Need": sin on even, cos on odd channels.

    Returns:
        (n_pos, dim) float tensor; PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(...).
    """
    pos = torch.arange(n_pos, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(n_pos, dim)
    pe[:, 0::2] = torch.sin(pos * inv_freq)
    pe[:, 1::2] = torch.cos(pos * inv_freq)[:, : dim // 2]
    return pe


def rope_tables(n_pos: int, head_size: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables for rotary position embedding, each (n_pos, head_size), in the
    rotate-half layout (GPT-NeoX): channel i pairs with i + head_size/2. The sin table's first half
    is negated, so that `apply_rope` rotates with one roll and one fused multiply-add."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(n_pos, dtype=torch.float32), inv_freq)  # (n_pos, hs/2)
    return torch.cat([angles, angles], dim=-1).cos(), torch.cat([-angles.sin(), angles.sin()], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of x (..., hs) by position-dependent angles: x·cos + rotate_half(x)·sin,
    where rotate_half(x1, x2) = (-x2, x1). cos and the signed sin (`rope_tables`) broadcast to x."""
    # roll gives (x2, x1); the signed table supplies the minus. Three kernels instead of six, which
    # on a CPU made RoPE 1.7x faster in fp32 and 3.6x under bf16 autocast (q and k of a batch together).
    return torch.addcmul(x * cos, x.roll(x.size(-1) // 2, dims=-1), sin)


# Inference on CUDA (no autograd: evaluation, generation, beam search) leaves out PyTorch's cuDNN attention:
# it builds an execution plan for every new key length, i.e. for every decoded token (22 tokens/s for the
# GPT-2 124M shape on an H100). Flash attention serves unmasked calls and the memory-efficient kernel
# masked ones (padding masks); tests/test_cuda.py checks. Training keeps PyTorch's choice.
INFERENCE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
           is_causal: bool = False, dropout: nn.Dropout | None = None,
           pattern: HookPoint | None = None) -> torch.Tensor:
    """softmax(QKᵀ/√d_k + M)·V: the one attention function that every kind of attention calls.

    Self-attention (causal or bidirectional) and cross-attention differ only in where q, k and v
    come from and in the mask. Two paths compute the same thing:
    - fused `F.scaled_dot_product_attention` (never forms the weights), the default;
    - the explicit path, taken when `pattern` has hooks, so they can read or replace the weights,
      and for single-query inference (T == 1 without autograd: a decode step) on CUDA or under
      torch.compile, where it is the faster one.

    Args:
        q: (B, nh, T, hs) queries; k, v: (B, nh, T_k, hs) keys and values.
        mask: bool, broadcastable to (B, nh, T, T_k); True where a query may attend to a key
            (padding masks, a static cache's filled positions). Every query needs one True key.
        is_causal: query i may see keys 0..i + (T_k - T), i.e. the queries are the last T
            positions of the keys (a fresh sequence, or new tokens after cached ones).
        dropout: applied to the weights while training (the module, so `.training` decides).
        pattern: the `hook_pattern` tap of the calling module.
    Returns:
        (B, nh, T, hs).
    """
    T, T_k = q.size(-2), k.size(-2)
    # A decode step (one query per row, no autograd) on CUDA, or compiled on a CPU, also takes the
    # explicit path: two small matmuls over the cache, which the compiler fuses around, where the fused
    # kernels tile 64 queries at a time (the memory-efficient kernel took 65% of a 124M batch-1 decode
    # step's GPU time on an H100; CPU flash attention 28% of the baby GPT's compiled step, 68 µs a
    # call). Eager on a CPU the fused kernel stays faster: one call instead of four.
    inference = not torch.is_grad_enabled()
    single_query = T == 1 and inference and (q.is_cuda or torch.compiler.is_compiling())
    explicit = (pattern is not None and pattern.hooked) or single_query
    if is_causal and (T != T_k or mask is not None or explicit):
        # SDPA's is_causal aligns top-left and takes no other mask: write the causal mask out
        causal = torch.ones(T, T_k, dtype=torch.bool, device=q.device).tril(diagonal=T_k - T)
        mask = causal if mask is None else mask & causal
        is_causal = False
    if explicit:
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, T_k)
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = pattern(att) if pattern is not None else att
        return (dropout(att) if dropout is not None else att) @ v
    dropout_p = dropout.p if dropout is not None and dropout.training else 0.0
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # CPU flash attention is ~4x slower in bf16 than in fp32 (forward + backward, torch 2.13):
        # under autocast the matmuls around it run in bf16 and attention itself in fp32
        with torch.autocast("cpu", enabled=False):
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                               dropout_p=dropout_p, is_causal=is_causal)
        return y.to(torch.get_autocast_dtype("cpu"))
    if inference and q.is_cuda:
        with sdpa_kernel(INFERENCE_BACKENDS):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)


class KVCache:
    """Keys and values of every layer, preallocated to the longest sequence, so decoding never reallocates.

    The GPT's (`KVCache.for_model`) and the encoder–decoder's decoder (`seq2seq.DecoderCache`) use it.
    k[layer], v[layer]: (B, n_head, block_size, head_size), one tensor per layer (a compiled step
    then writes each in place; slices of one shared tensor would be copied whole). Two ways to fill it:
    - growing (a prompt's prefill, beam search, the encoder-decoder's decoder): `update(layer, k, v)`
      writes after the `pos` filled positions and returns the filled part; the model advances `pos`.
    - fixed-shape (the decode step of `workbench.generate`): `write(layer, k, v, positions)` writes
      at each row's own positions and returns the whole buffers; attention masks the unfilled slots,
      so every step has the same shapes and compiles once.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_size: int, device, dtype):
        shape = (batch_size, n_head, max_len, head_size)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.pos = 0

    @classmethod
    def for_model(cls, config: ModelConfig, batch_size: int, device, dtype) -> KVCache:
        """A cache for the GPT of `config`: n_layer layers of block_size positions."""
        return cls(config.n_layer, batch_size, config.n_head, config.block_size, config.head_size, device, dtype)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at the current position; return all keys/values so far."""
        end = self.pos + k.size(2)
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor,
              positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at positions (B, T) of each row; return the whole buffers (B, nh, block_size, hs).

        The positions are a tensor, not a Python int, so the step's shapes and code are the same
        at every position (a compiled step is traced once).
        """
        rows = torch.arange(k.size(0), device=k.device)[:, None]  # (B, 1), with positions: (B, T) index pairs
        # an index_put_ (not scatter_), which a compiled step performs in place on the cache
        self.k[layer][rows, :, positions] = k.transpose(1, 2)  # values (B, T, nh, hs)
        self.v[layer][rows, :, positions] = v.transpose(1, 2)
        return self.k[layer], self.v[layer]

    def prefix(self, n: int) -> KVCache:
        """The first n slots of every layer as a cache of its own, sharing this one's memory (writes go
        through). An eager decode step attends over `prefix(filled + 1)` instead of all block_size slots."""
        view = copy.copy(self)
        view.k, view.v = [b[:, :, :n] for b in self.k], [b[:, :, :n] for b in self.v]
        return view

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep the rows (batch entries) at indices `rows` (B,), in that order, in place (beam search)."""
        for buffer in (*self.k, *self.v):
            buffer.copy_(buffer.index_select(0, rows))


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention, q, k, v from `c_attn` (see `project`); taps `hook_pattern` and `hook_z`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.hook_pattern = HookPoint()  # (B, nh, T, T_k)
        self.hook_z = HookPoint()  # (B, T, nh, hs)
        self.split_qkv = config.split_qkv  # q, k, v from three matmuls: see `project`

    def forward(self, x, rope=None, cache: KVCache | None = None, layer: int = 0, positions=None, filled=None):
        """x: (B, T, C) -> (B, T, C). rope: cos and signed sin tables (`rope_tables`) at x's
        positions, broadcastable to (B, T, heads, hs). With a cache, x holds the positions after the
        cached ones, or (fixed-shape decoding) the positions (B, T) given, with `filled`
        (B, 1, T, block_size) the cache slots each query may see (built once per step by
        `GPT.hidden_states`)."""
        B, T, C = x.size()
        q, k, v = self.project(x, rope)  # (B, nh, T, hs) each
        mask = None
        if positions is not None:
            k, v = cache.write(layer, k, v, positions)  # (B, nh, block_size, hs)
            mask = filled
        elif cache is not None:
            # generation feeds a fresh sequence from position 0, then one token at a time
            assert cache.pos == 0 or T == 1, f"{T} new positions after {cache.pos} cached ones; feed one at a time"
            k, v = cache.update(layer, k, v)  # (B, nh, pos+T, hs)
        # a fresh sequence is plain causal; one new query may see every cached key
        y = attend(q, k, v, mask, is_causal=T > 1 and mask is None, dropout=self.attn_dropout, pattern=self.hook_pattern)
        z = self.hook_z(y.transpose(1, 2))  # (B, T, nh, hs)
        y = z.contiguous().view(B, T, C)  # re-assemble heads side by side
        return self.resid_dropout(self.c_proj(y))

    def project(self, x, rope=None):
        """q, k, v (B, nh, T, hs) from x (B, T, C): `c_attn` as one matmul, or, with `split_qkv`, as
        three on its weight's q, k and v rows. Same values; the layout of their gradients differs.

        Sliced from one (B, T, 3C) output, q, k and v are strided views, and the fused attention's
        backward returns their gradients in its own layout, which the compiled backward copies,
        transposed, into one (B, T, 3C) gradient (1.07 ms of the 124M step on an H200). From three
        matmuls they are dense and their gradients come back as the matmuls read them: 1.35 ms less
        GPU time in that step, but the extra matmuls cost the host more to launch (21.0 against 14.6 ms
        a step, timed with the GPU held busy), so the step gained only 0.7-1.2% (two runs on an H200,
        the two ways in turns). A smaller model's step is bound by the host sooner, and on a CPU the
        three matmuls are slower (bf16: 4.5% on the baby GPT), so it is off by default;
        `--split-qkv` (`ModelConfig.split_qkv`, a flag of `pretrain` and `bench`) turns it on. A
        `c_attn` that is not a plain `nn.Linear` (LoRA adapters) or has hooks is always called as a
        module.
        """
        B, T, C = x.size()
        hs = C // self.n_head
        if self.split_qkv and _plain_linear(self.c_attn):
            biases = self.c_attn.bias.split(C) if self.c_attn.bias is not None else (None, None, None)
            q, k, v = (F.linear(x, w, b).view(B, T, self.n_head, hs) for w, b in zip(self.c_attn.weight.split(C), biases))
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        qk, v = self.c_attn(x).split([2 * C, C], dim=2)
        qk = qk.view(B, T, 2 * self.n_head, hs)  # q's heads, then k's
        if rope is not None:
            qk = apply_rope(qk, *rope)  # q and k in one pass
        q, k = qk.transpose(1, 2).split(self.n_head, dim=1)
        return q, k, v.view(B, T, self.n_head, hs).transpose(1, 2)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = nn.GELU() if config.activation == "gelu" else nn.ReLU()  # exact (erf) GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)); every stage tapped."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        # taps interleaved in forward order, so hook_points() lists them as they fire
        self.hook_resid_pre = HookPoint()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x, rope=None, cache=None, layer=0, positions=None, filled=None):
        """x: (B, T, C) -> (B, T, C)."""
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln_1(x), rope, cache, layer, positions, filled)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln_2(x))))


class HookedModule(nn.Module):
    """What every model with `HookPoint` taps shares: their names, `hooks`, and keeping what they see.

    A subclass builds its modules, then calls `name_hook_points()`; its `run_with_cache` says which
    inputs its forward takes and calls `_run_with_cache(names, *inputs)`. Used by `GPT` and by
    `workbench.seq2seq.Seq2Seq`.
    """

    def name_hook_points(self) -> None:
        """Give every tap its module path as `name` (call once, after building the modules)."""
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name

    def hook_points(self) -> dict[str, HookPoint]:
        """Every tap by name, in forward order (each model's module docstring lists them)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str, Callable]] = ()):
        """Run the `with` block with forward hooks on named taps; they are removed on exit, even on error.

        Each hook is called as `fn(tensor, hook)` with the tensor passing through the tap and the
        HookPoint (`hook.name` says which); returning a tensor of the same shape replaces it
        downstream (e.g. zeros in one head's slice of `attn.hook_z` ablate that head), returning
        None leaves it. A hook on `attn.hook_pattern` switches that layer to the explicit path.

        >>> with model.hooks([("transformer.h.0.attn.hook_z", lambda z, hook: z * 0)]):
        ...     logits, _ = model(idx)

        Args:
            fwd_hooks: (name, fn) pairs; a name may appear more than once (hooks run in order).
        Raises:
            ValueError: for a name that is not a tap; no hook is added then.
        """
        fwd_hooks = list(fwd_hooks)
        points = self.hook_points()
        unknown = [name for name, _ in fwd_hooks if name not in points]
        if unknown:
            raise ValueError(f"unknown hook name {unknown[0]!r}; valid names look like "
                             f"{', '.join(list(points)[:3])}, ... ({len(points)} in all: list(model.hook_points()))")
        handles = []
        try:
            for name, fn in fwd_hooks:
                handles.append(points[name].register_forward_hook(
                    lambda module, args, output, fn=fn: fn(output, module)))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _run_with_cache(self, names: Iterable[str] | Callable[[str], bool] | str | None, *inputs):
        """Run `self(*inputs)` through the model's own forward (so wrappers such as FSDP still gather
        the weights) and keep what the named taps saw: (forward's output, {name: detached tensor}).
        `names`: None for all taps, a list of names, or a predicate on names."""
        if isinstance(names, str):
            names = [names]
        elif names is None:
            names = list(self.hook_points())
        elif callable(names):
            names = [name for name in self.hook_points() if names(name)]
        cache: dict[str, torch.Tensor] = {}

        def keep(x, hook):
            cache[hook.name] = x.detach()

        with self.hooks([(name, keep) for name in names]):
            output = self(*inputs)
        return output, cache


class GPT(HookedModule):
    """GPT decoder. `forward(idx, targets=None) -> (logits (B, T, vocab), loss or None)`.

    The tapped tensors are read with `run_with_cache` and read or replaced with `hooks`.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        if config.pos_encoding == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        # Fixed tables are derived from the config, so they are not saved (persistent=False).
        if config.pos_encoding == "sinusoidal":
            self.register_buffer("pe", sinusoidal_encoding(config.block_size, config.n_embd), persistent=False)
        if config.pos_encoding == "rope":
            cos, sin = rope_tables(config.block_size, config.head_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self.hook_ln_f = HookPoint()
        # Training loss without full logits (`chunked_cross_entropy`): None chooses by device, chunks on a
        # CPU (less memory and faster, bench --loss-memory) and full logits on CUDA, where the compiled
        # cross-entropy is fused and the chunks' small matmuls cost more than they save; True/False force it.
        self.chunked_loss: bool | None = None
        self.name_hook_points()

        # GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)
        # so the residual stream's variance does not grow with depth.
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ forward
    def hidden_states(self, idx, cache: KVCache | None = None, positions: torch.Tensor | None = None):
        """Final-LayerNorm hidden states (B, T, C) for token ids idx (B, T).

        With a cache, idx holds the positions after the cached ones, and the cache advances; or,
        given `positions` (B, T), idx holds tokens at those positions of each row, written into the
        cache at those slots (the fixed-shape decode step; `cache.pos` is left alone).
        """
        B, T = idx.size()
        if positions is None:  # training, or a growing cache: T consecutive positions from start
            start = cache.pos if cache is not None else 0
            assert start + T <= self.config.block_size, f"sequence of {start + T} exceeds block_size"
            pos = slice(start, start + T)
        else:  # the fixed-shape decode step: each row's own positions
            pos = positions  # (B, T)
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.config.pos_encoding == "learned":
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device) if positions is None
                                         else positions)
        elif self.config.pos_encoding == "sinusoidal":
            x = x + self.pe[pos]
        rope = None
        if self.config.pos_encoding == "rope":
            # (T, 1, hs), or (B, T, 1, hs) per row: broadcast over the heads of (B, T, heads, hs)
            rope = (self.rope_cos[pos].unsqueeze(-2), self.rope_sin[pos].unsqueeze(-2))
        x = self.transformer.drop(x)
        filled = None
        if positions is not None:
            # each query sees the cache slots up to its own position; later slots are stale or empty
            filled = torch.arange(cache.k[0].size(2), device=idx.device) <= positions[:, None, :, None]  # (B, 1, T, slots)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, rope, cache, layer, positions, filled)
        if cache is not None and positions is None:
            cache.pos += T
        return self.hook_ln_f(self.transformer.ln_f(x))

    def forward(self, idx, targets=None):
        """Logits for every position, and the loss when targets are given.

        While training with targets (`model.train()` and autograd on) the loss is all a step needs and
        the logits returned are None, on every device (as Liger's fused linear cross-entropy does).
        Returning them would cost more than the reference: autograd must give every output of a
        compiled graph a gradient, so each backward would fill and add a zero tensor the size of the
        logits (0.7 ms of the 27 ms GPT-2 124M step on an H200: two passes over 1.2 GB). On a CPU, or
        wherever `chunked_loss` is True, that loss comes from `chunked_cross_entropy`, which never holds
        the full (B, T, vocab) logits; on CUDA from full logits and a cross-entropy the compiler fuses.
        In eval mode, under no_grad, or without targets the logits are returned in full.

        Args:
            idx: (B, T) token ids, T <= block_size.
            targets: (B, T) next-token ids; -1 marks positions to ignore.
        Returns:
            (logits (B, T, vocab_size) or None, loss scalar or None).
        """
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"input of length {T} exceeds block_size={self.config.block_size}; crop the input")
        x = self.hidden_states(idx)  # (B, T, C)
        training = targets is not None and self.training and torch.is_grad_enabled()
        chunked = self.chunked_loss if self.chunked_loss is not None else x.device.type == "cpu"
        if training and chunked:
            return None, chunked_cross_entropy(x.view(-1, x.size(-1)), self.lm_head.weight, targets.view(-1))
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return (None if training else logits), loss

    # -------------------------------------------------------------------- hooks
    def run_with_cache(self, idx, names: Iterable[str] | Callable[[str], bool] | None = None):
        """Run the model on idx and keep what the named taps saw.

        Goes through the model's own forward (`self(idx)`), so wrappers such as FSDP still
        gather the weights. Caching an `attn.hook_pattern` runs that layer's explicit path.

        Args:
            idx: (B, T) token ids, T <= block_size.
            names: the taps to keep: None for all, a list of names, or a predicate on names
                (e.g. `lambda n: n.endswith("hook_pattern")`).
        Returns:
            (logits (B, T, vocab_size), cache {name: detached tensor}, shapes as in the module
            docstring with T_k = T).
        """
        (logits, _), cache = self._run_with_cache(names, idx)
        return logits, cache

    # --------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate_stream(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                        top_p: float | None = None, seed: int | None = None, use_cache: bool = True):
        """Continue idx (B, T) token by token, yielding each new column (B, 1) as soon as it is decoded.

        temperature=0 is greedy decoding. top_k keeps the k likeliest tokens, top_p the smallest
        set whose probability reaches p. With the KV cache (`workbench.generate.Engine`, eager; build
        an Engine yourself for a compiled step, batches of different lengths and stops) each step
        feeds only the newest token; once the text outgrows block_size the window slides and (like
        the uncached path) the last block_size tokens are re-encoded, so cached and uncached
        decoding give the same tokens. Both run in `torch.inference_mode`: the columns are inference
        tensors (`clone()` one outside inference mode before using it with gradients).
        """
        if use_cache:
            from .generate import Engine  # generation builds on the model, not the other way round

            yield from Engine(self, compile=False).stream(idx, max_new_tokens, temperature, top_k, top_p, seed)
            return
        check_sampling(temperature, top_k, top_p)
        generator = torch.Generator(device=idx.device).manual_seed(seed) if seed is not None else None
        with eval_mode(self):
            for _ in range(max_new_tokens):
                x = self.hidden_states(idx[:, -self.config.block_size:])  # the whole window, every step
                logits = self.lm_head(x[:, -1, :]).float()  # (B, vocab)
                idx_next = sample_next(logits, temperature, top_k, top_p, generator)
                idx = torch.cat((idx, idx_next), dim=1)
                yield idx_next

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, use_cache: bool = True):
        """`generate_stream` run to the end: idx (B, T) -> (B, T + max_new_tokens)."""
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, seed, use_cache))
        return torch.cat([idx, *new], dim=1)

    # ------------------------------------------------------------------- sizes
    def num_params(self, exclude_position: bool = False) -> int:
        """Number of parameters (tied weights counted once); optionally without wpe, as nanoGPT reports."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_position and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token: 6N + 12·L·H·Q·T (PaLM appendix B, as nanoGPT)."""
        cfg = self.config
        T = seq_len or cfg.block_size
        return 6 * self.num_params(exclude_position=True) + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * T

    # ----------------------------------------------------------- HF interop
    def export_hf(self, out_dir: str | Path) -> Path:
        """Write a Hugging Face `GPT2LMHeadModel` directory (config.json + model.safetensors).

        Needs the GPT-2 layout: learned positions, GELU and tied weights. Linear weights are
        transposed because GPT-2 stores them as Conv1D (in, out); missing biases are written as zeros.
        """
        cfg = self.config
        if (cfg.pos_encoding, cfg.activation, cfg.tie_weights) != ("learned", "gelu", True):
            raise ValueError("export_hf needs pos_encoding='learned', activation='gelu', tie_weights=True "
                             "(GPT-2's layout); train with those settings to export")
        from safetensors.torch import save_file
        from transformers import GPT2Config

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().float().cpu() for k, v in self.state_dict().items()}
        tensors: dict[str, torch.Tensor] = {}
        conv1d = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
        for key, value in sd.items():
            if key == "lm_head.weight":
                continue  # tied to wte
            if any(key.endswith(f"{name}.weight") for name in conv1d):
                value = value.t()
            tensors[key] = value.contiguous()
        if not cfg.bias:  # GPT-2 always has biases: zeros keep the function unchanged
            for name, p in self.named_parameters():
                if name.endswith(".weight") and name != "lm_head.weight" and "wte" not in name and "wpe" not in name:
                    bias_key = name[: -len("weight")] + "bias"
                    width = p.shape[0]
                    tensors.setdefault(bias_key, torch.zeros(width))
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        from .checkpoint import new_file_mode  # safetensors 0.8 writes 0600: readable as any other file

        (out / "model.safetensors").chmod(new_file_mode())
        hf_config = GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
            n_head=cfg.n_head, activation_function="gelu", resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
            architectures=["GPT2LMHeadModel"], bos_token_id=None, eos_token_id=None,
        )
        hf_config.to_json_file(str(out / "config.json"))
        return out


LOSS_CHUNK_ELEMENTS = 2**24  # logits held at once by chunked_cross_entropy: 64 MiB in fp32


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (h @ Wᵀ) and both its gradients, computed chunk by chunk of rows.

    The forward pass also computes d loss/d h and d loss/d W (softmax − one-hot, times h or W), so
    only one chunk of logits exists at a time and backward just scales the stored gradients:
    the same matmuls as the plain path (no recomputation), a fraction of its memory.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk_rows: int):
        valid = targets != -1
        n_valid = valid.sum().clamp(min=1)
        acc = torch.promote_types(weight.dtype, torch.float32)  # softmax and sums in fp32 at least
        loss = torch.zeros((), device=h.device, dtype=acc)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=acc)
        for start in range(0, h.size(0), chunk_rows):
            h_c, ok = h[start : start + chunk_rows], valid[start : start + chunk_rows]
            target = targets[start : start + chunk_rows].clamp(min=0)[:, None]  # (n, 1)
            logp = torch.log_softmax((h_c @ weight.t()).to(acc), dim=-1)  # (n, V)
            loss = loss - (logp.gather(1, target).squeeze(1) * ok).sum()
            grad = logp.exp_()  # softmax, in place: each pass over (n, V) costs time at a large vocabulary
            grad.scatter_add_(1, target, torch.full_like(target, -1, dtype=grad.dtype))
            grad = grad.mul_((ok / n_valid)[:, None]).to(h_c.dtype)  # d mean loss / d logits, (n, V)
            grad_h[start : start + chunk_rows] = grad @ weight.to(grad.dtype)  # (n, C)
            grad_w += grad.t() @ h_c  # (V, C)
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss, grad_w * grad_loss, None, None


def chunked_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          chunk_rows: int | None = None) -> torch.Tensor:
    """`F.cross_entropy(h @ weight.T, targets, ignore_index=-1)` without materialising all logits.

    Args:
        h: (N, C) final hidden states; weight: (V, C) output layer; targets: (N,), -1 = ignore.
        chunk_rows: rows per chunk; default keeps LOSS_CHUNK_ELEMENTS logits at a time.
    Returns:
        scalar mean loss over the targets that are not -1 (differentiable in h and weight).
    """
    chunk_rows = chunk_rows or max(1, LOSS_CHUNK_ELEMENTS // weight.size(0))
    return _ChunkedCrossEntropy.apply(h, weight, targets, chunk_rows)


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode (no dropout) inside the block; the model's train/eval mode is restored after, even
    when the block raises (bad ids, Ctrl-C), so a model being trained is not left without dropout.
    Used wherever a model is run for its outputs rather than trained (evaluation, interpretability,
    attention capture, decoding, throughput)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Refuse sampling settings `sample_next` cannot use, before any decoding starts."""
    # numbers.Real/Integral: numpy's scalars too; a bool is an int to Python, not a setting
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature >= 0:  # NaN too
        raise ValueError(f"temperature must be >= 0, a number (0 is greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"top_k must be >= 1, a whole number (None keeps every token), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], a number (e.g. 0.9: the smallest set of tokens holding 90% of "
                         f"the probability; None keeps every token), got {top_p!r}")


def check_vocabulary(model: GPT, tokenizer) -> None:
    """A one-line ValueError unless `tokenizer` (anything with `vocab_size`) fits `model`'s vocabulary.

    A tokenizer of another model is an easy slip in a notebook with several in scope: with fewer
    tokens its ids would be read as other tokens, silently; with more, the embedding fails deep in torch.
    """
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary has "
                         f"{model.config.vocab_size}: it is another model's; pass the tokenizer this model was "
                         "trained with (load_pretrained returns the two together)")


def sample_next(logits, temperature: float, top_k: int | None, top_p: float | None, generator=None):
    """Pick the next token id (B, 1) from logits (B, vocab)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(int(top_k), logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep tokens until p is reached
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
