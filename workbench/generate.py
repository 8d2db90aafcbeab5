"""Fast generation: a fixed-shape decode step over a static KV cache, batched prompts, stops, streaming.

`Engine` knows only token ids (as nanochat's `engine.py`). `Engine.stream` is a generator of token
columns: it prefills every prompt at once (right-padded: row b's tokens sit at positions
0..len_b-1, the padding after them is never attended to), then decodes one token per row per step.
The decode step, `decode_step`, writes each row's new key/value at that row's position (a tensor)
in a `KVCache` preallocated to block_size and attends over the whole cache through a mask of the
filled positions, so its shapes never change as the text grows. A compiled engine compiles it once
(`torch.compile`); on CUDA it also captures it as one CUDA graph (again when the batch size changes),
which every token replays: one launch instead of a few hundred, and no kernel chosen anew as the text grows
(attention kernels: `model.INFERENCE_BACKENDS`). `Engine.generate` is the thin non-streaming
wrapper; `stream_text`/`generate_text` add the tokenizer and stop strings.

When a row's text outgrows block_size, the window slides as in the uncached path: every row's
last block_size tokens are encoded afresh (a prefill), so cached, uncached, batched and
one-at-a-time decoding give the same tokens (greedy).
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterator, Sequence

import torch

from .model import GPT, KVCache, check_sampling, check_vocabulary, eval_mode, sample_next


def decode_step(model: GPT, cache: KVCache, idx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Feed one token per row at its own position; the logits of the next token.

    Args:
        idx: (B, 1) token ids; positions: (B, 1) their positions (and cache slots) in each row.
    Returns:
        (B, vocab_size) float32 logits. Every call has the same shapes, whatever the positions.
    """
    x = model.hidden_states(idx, cache, positions)  # (B, 1, C); attends through the mask of filled slots
    return model.lm_head(x[:, -1]).float()


class Engine:
    """Generates from a GPT with a static KV cache and a decode step compiled once.

    Args:
        model: a GPT (or a copy in another dtype, or int8-quantized); put in eval mode while generating.
        compile: compile the decode step (`torch.compile`; CUDA graphs on CUDA). None: on CUDA only.
    """

    def __init__(self, model: GPT, compile: bool | None = None):
        self.model = model
        self.device = model.lm_head.weight.device
        cuda = self.device.type == "cuda"
        self.compile = cuda if compile is None else compile
        # dynamic=False: one graph per batch size, never a slower shape-generic one. On CUDA, inductor's
        # coordinate-descent tuning (it also turns one-row matmuls into fused kernels): a 124M batch-1
        # step went from 1,641 to 1,943 tokens/s on an H200, for about a minute more compiling, once
        # per process. On a CPU, the compiled step's wrapper in C++ rather than Python: the baby GPT's
        # step 15-19% faster (e.g. 707 against 852 µs, alternating in one process), 9 s more compiling.
        options = {"coordinate_descent_tuning": True} if cuda else {"cpp_wrapper": True}
        self.step = (torch.compile(decode_step, fullgraph=True, dynamic=False, options=options)
                     if self.compile else decode_step)
        self._cache: KVCache | None = None
        self._graph: CapturedStep | None = None

    def cache(self, batch_size: int) -> KVCache:
        """The engine's cache for this batch size, kept between calls (a captured step writes into it).

        Built as ordinary tensors even inside `torch.inference_mode` (where `stream` runs), so that a
        caller may also write to it under plain `torch.no_grad` (inference tensors refuse that).
        """
        if self._cache is None or self._cache.k[0].size(0) != batch_size:
            with torch.inference_mode(False):
                self._cache = KVCache.for_model(self.model.config, batch_size, self.device,
                                                self.model.lm_head.weight.dtype)
                self._graph = None
                if self.compile and self.device.type == "cuda":
                    self._graph = CapturedStep(self.step, self.model, self._cache)
        return self._cache

    def decode(self, cache: KVCache, idx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`decode_step` on this engine's whole cache: replayed as a CUDA graph, compiled, or eager."""
        if self._graph is not None and cache is self._cache:
            return self._graph(idx, positions)
        return self.step(self.model, cache, idx, positions)

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encode right-padded rows from position 0 into the cache; the logits after each row's last token.

        Args:
            tokens: (B, T) ids, row b's tokens in its first lengths[b] columns, T <= block_size.
            lengths: (B,) tokens per row, each >= 1.
        Returns:
            (B, vocab_size) float32 logits.
        """
        cache = self.cache(tokens.size(0))
        cache.pos = 0
        x = self.model.hidden_states(tokens, cache)  # (B, T, C); causal, so padding never reaches a row
        last = x[torch.arange(x.size(0), device=x.device), lengths - 1]  # (B, C)
        return self.model.lm_head(last).float()

    @torch.inference_mode()
    def stream(self, prompts: Sequence[Sequence[int]] | torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stop_tokens: Sequence[int] = ()) -> Iterator[torch.Tensor]:
        """Yield every row's next token, a (B, 1) column, as soon as it is decoded.

        Stops after max_new_tokens columns, or once every row has produced one of `stop_tokens`
        (a row that has stopped keeps decoding until then; `generate` cuts it).

        Args:
            prompts: B token-id lists of any lengths >= 1, or a (B, T) tensor of equal-length prompts.
                A prompt longer than block_size keeps its last block_size tokens.
            temperature: 0 is greedy; top_k/top_p as in `sample_next`; seed makes sampling reproducible.

        Runs in `torch.inference_mode` (no autograd bookkeeping at all: eager batch-1 decoding of the
        baby GPT ~9% faster than under `no_grad`), so the columns are inference tensors: use them
        freely, but `clone()` one outside inference mode before it enters a computation with gradients.
        """
        check_sampling(temperature, top_k, top_p)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        if isinstance(prompts, torch.Tensor) and prompts.dim() != 2:
            raise ValueError(f"prompts as a tensor must be (B, T) token ids, got shape {tuple(prompts.shape)}; "
                             "add a batch dimension with prompts[None]")
        rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else [list(map(int, p)) for p in prompts]
        if not rows:
            raise ValueError("no prompts to continue; pass a list of token-id lists, one per row")
        if any(len(r) == 0 for r in rows):
            raise ValueError("every prompt needs at least one token; start empty prompts with e.g. a newline")
        model, device, block = self.model, self.device, self.model.config.block_size
        vocab = model.config.vocab_size
        if not (0 <= min(map(min, rows)) and max(map(max, rows)) < vocab):  # (builtins: this is time to first token)
            bad = next(t for r in rows for t in r if not 0 <= t < vocab)
            raise ValueError(f"prompt token id {bad} is outside the model's vocabulary (0..{vocab - 1}); "
                             "encode prompts with the model's own tokenizer")
        B = len(rows)
        generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        stops = torch.tensor(list(stop_tokens), dtype=torch.long, device=device)
        with eval_mode(model):
            # every row's tokens so far, right-padded; their lengths on the host decide slides without a sync
            lengths = [len(r) for r in rows]
            ends = torch.tensor(lengths, device=device)[:, None]  # (B, 1) the same, on the device
            width = max(lengths) + max_new_tokens
            tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long, device=device)
            logits = self._encode_windows(tokens, lengths)
            filled = [min(n, block) for n in lengths]  # cache slots in use per row
            positions = torch.tensor(filled, device=device)[:, None] - 1  # (B, 1) slot of each row's newest token
            done = torch.zeros(B, 1, dtype=torch.bool, device=device)
            for i in range(max_new_tokens):
                if i > 0 and max(filled) == block:  # a row's window is full: slide every row's window, encode afresh
                    logits = self._encode_windows(tokens, lengths)
                    filled = [min(n, block) for n in lengths]
                    positions = torch.tensor(filled, device=device)[:, None] - 1
                elif i > 0:
                    positions, filled = positions + 1, [n + 1 for n in filled]
                    logits = self._decode_next(idx_next, positions, filled)
                idx_next = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
                tokens.scatter_(1, ends, idx_next)
                ends, lengths = ends + 1, [n + 1 for n in lengths]
                yield idx_next
                if len(stops):
                    done |= torch.isin(idx_next, stops)
                    if bool(done.all()):
                        return

    def _decode_next(self, idx: torch.Tensor, positions: torch.Tensor, filled: list[int]) -> torch.Tensor:
        """Feed each row's newest token; the logits after it.

        Args:
            idx: (B, 1) the tokens; positions: (B, 1) their cache slots; filled: slots in use per row,
                these tokens' included.
        Returns:
            (B, vocab_size) float32 logits.
        """
        B = idx.size(0)
        if not self.compile and len(set(filled)) == 1:
            # every row at the same position (one prompt, or equal lengths), eager: the growing
            # cache's step, which needs no mask (the fused kernel's fastest case)
            cache = self.cache(B)
            cache.pos = filled[0] - 1
            return self.model.lm_head(self.model.hidden_states(idx, cache)[:, -1]).float()
        # compiled: the whole cache, fixed shapes (`decode_step`); eager: only the slots in use, fewer keys
        cache = self.cache(B) if self.compile else self.cache(B).prefix(max(filled))
        return self.decode(cache, idx, positions)

    def _encode_windows(self, tokens: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Prefill each row's last block_size tokens (of lengths[b] in `tokens`), right-padded."""
        block = self.model.config.block_size
        if max(lengths) <= block:
            return self.prefill(tokens[:, : max(lengths)], torch.tensor(lengths, device=tokens.device))
        windows = torch.zeros(tokens.size(0), block, dtype=torch.long, device=tokens.device)
        for b, n in enumerate(lengths):
            start = max(n - block, 0)
            windows[b, : n - start] = tokens[b, start:n]
        return self.prefill(windows, torch.tensor([min(n, block) for n in lengths], device=tokens.device))

    def generate(self, prompts: Sequence[Sequence[int]] | torch.Tensor, max_new_tokens: int,
                 stop_tokens: Sequence[int] = (), **sampling) -> list[list[int]]:
        """`stream` run to the end: each row's new token ids, cut before its first stop token.

        `sampling`: temperature, top_k, top_p, seed as in `stream`.
        """
        columns = list(self.stream(prompts, max_new_tokens, stop_tokens=stop_tokens, **sampling))
        if not columns:
            return [[] for _ in range(len(prompts))]
        stops, out = set(stop_tokens), []
        for row in torch.cat(columns, dim=1).tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            out.append(row[:cut])
        return out


class CapturedStep:
    """`step(model, cache, idx, positions)` recorded once as a CUDA graph over a fixed cache and batch size.

    Calling it copies idx and positions into the graph's own input tensors and replays every kernel
    of the step in one launch. The logits it returns live in the graph's memory: the next call
    overwrites them, so read them first (`Engine.stream` samples from them at once).

    Recording runs the step a few times first (that compiles it) on a side stream, as PyTorch's CUDA
    graph docs require. Those runs write keys and values into slot 0 of every row; a prefill always
    writes slots 0.. before any decode step reads them, so nothing stale is ever attended to.
    """

    def __init__(self, step, model: GPT, cache: KVCache, warmup: int = 3):
        batch = cache.k[0].size(0)
        self.idx = torch.zeros(batch, 1, dtype=torch.long, device=cache.k[0].device)
        self.positions = torch.zeros_like(self.idx)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(warmup):
                step(model, cache, self.idx, self.positions)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.logits = step(model, cache, self.idx, self.positions)

    def __call__(self, idx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.idx.copy_(idx)
        self.positions.copy_(positions)
        self.graph.replay()
        return self.logits


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many characters at the end of text could begin a stop string (not shown yet)."""
    return max((n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


def _stop_cut(tail: str, text: str, stop: Sequence[str]) -> int:
    """Where the generated text ends at its first stop string: an index into text, -1 if none.

    A stop string counts when it ends after the prompt, so it may begin in the prompt (as Hugging
    Face's `StopStringCriteria`, which matches against the whole sequence): tail is the prompt's last
    max(len(stop)) - 1 characters, all such a stop string can reach into. One wholly inside the prompt
    does not count. A stop string that begins in the prompt cuts the text at 0.
    """
    seen = tail + text
    # start each search where a match would end after the tail: never one wholly in the prompt
    found = [i for i in (seen.find(s, max(len(tail) - len(s) + 1, 0)) for s in stop) if i >= 0]
    return max(min(found) - len(tail), 0) if found else -1  # never a cut into the prompt


def stream_text(engine: Engine, tokenizer, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                stop_tokens: Sequence[int] = (), **sampling) -> Iterator[list[str]]:
    """Yield, per decoding step, the new text of every row (a list of B strings, "" where nothing new).

    A row ends at the first of its stop strings (which is not shown) or stop tokens. A stop string
    counts once it ends in the generated text, even if it begins in the prompt (as Hugging Face's
    `StopStringCriteria`, which sees the whole sequence): the prompt "Hello\n" with the stop "\n\n"
    ends at a first generated "\n", showing nothing; one wholly inside the prompt does not count.
    Text that might be the start of a stop string, or an unfinished UTF-8 character, is held back
    until it is decided, so the pieces joined equal `generate_text`'s result.

    Args:
        engine: an `Engine` over the model; tokenizer: the model's (`encode`/`decode`).
        prompts: B strings, each encoding to at least one token (one string is one prompt).
        stop: strings that end a row (one string is one stop string); stop_tokens: token ids that end a
            row (e.g. BPE's end of text).
        sampling: temperature, top_k, top_p, seed (as in `Engine.stream`).
    """
    prompts = [prompts] if isinstance(prompts, str) else prompts  # one prompt, not one per character
    stop = [stop] if isinstance(stop, str) else stop
    if any(not s for s in stop):
        raise ValueError("stop strings must be non-empty; remove the empty string from stop")
    check_vocabulary(engine.model, tokenizer)
    ids = [tokenizer.encode(p) for p in prompts]
    # a stop string may begin in the prompt: keep the prompt's last characters that one could span
    reach = max(map(len, stop), default=1) - 1
    tails = [p[max(len(p) - reach, 0):] for p in prompts]
    new: list[list[int]] = [[] for _ in prompts]
    shown = ["" for _ in prompts]
    ended = [False for _ in prompts]
    stop_set = set(stop_tokens)
    # every row stops on its own; the engine ends the stream when all have stopped
    for column in _until_all(engine.stream(ids, max_new_tokens, stop_tokens=stop_tokens, **sampling), ended):
        pieces = []
        for b, token in enumerate(column[:, 0].tolist()):
            if ended[b]:
                pieces.append("")
                continue
            if token in stop_set:
                ended[b] = True
            else:
                new[b].append(token)
            text = tokenizer.decode(new[b])
            cut = _stop_cut(tails[b], text, stop)
            if cut >= 0:
                text, ended[b] = text[:cut], True
            elif not ended[b]:
                text = text.rstrip("\ufffd")  # a byte-level BPE token may end inside a character
                # held back with the prompt's tail: the text may be the middle of a stop string begun there
                text = text[: len(text) - min(_held_back(tails[b] + text, stop), len(text))]
            pieces.append(text[len(shown[b]):])
            shown[b] = text
        yield pieces
    # the end of max_new_tokens: what was held back is final now
    yield [("" if ended[b] else tokenizer.decode(new[b])[len(shown[b]):]) for b in range(len(prompts))]


def _until_all(stream: Iterator[torch.Tensor], ended: list[bool]) -> Iterator[torch.Tensor]:
    """Pass the stream's columns through until every row has ended (stop strings end rows the engine cannot see)."""
    for column in stream:
        yield column
        if all(ended):
            stream.close()
            return


def generate_text(engine: Engine, tokenizer, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                  stop_tokens: Sequence[int] = (), **sampling) -> list[str]:
    """`stream_text` run to the end: each row's continuation (without the prompt or the stop string)."""
    texts = None  # one per row, as stream_text counts rows (its last step always comes)
    for pieces in stream_text(engine, tokenizer, prompts, max_new_tokens, stop, stop_tokens, **sampling):
        texts = pieces if texts is None else [t + p for t, p in zip(texts, pieces)]
    return texts


INFERENCE_DTYPES = ("float32", "bfloat16", "int8")


def inference_model(model: GPT, dtype: str = "auto") -> GPT:
    """The model to generate with: its weights in the dtype decoding runs in (a copy unless float32).

    Args:
        dtype: "auto" (bfloat16 on CUDA, float32 elsewhere); "bfloat16": a bf16 copy of the weights,
            so every matmul and the KV cache are bf16 (not autocast over fp32 weights, which
            converts the weights again at every step); "int8": dynamic int8 quantization of the
            Linear layers (`compress.quantize_int8`, CPU only; the quality cost shows in `evaluate`'s
            compression table and in `bench`'s greedy-token agreement); "float32": the model itself.
    """
    device = model.lm_head.weight.device
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"unknown inference dtype {dtype!r}; choose auto, {', '.join(INFERENCE_DTYPES)}")
    if dtype == "int8":
        if device.type != "cpu":
            raise ValueError("int8 dynamic quantization runs on the CPU only; use bfloat16 on CUDA, or --device cpu")
        from .compress import quantize_int8

        return quantize_int8(model)
    if dtype == "bfloat16":
        return copy.deepcopy(model).to(torch.bfloat16).eval()
    return model if model.lm_head.weight.dtype == torch.float32 else copy.deepcopy(model).float().eval()
