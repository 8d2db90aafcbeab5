"""Speed benchmark: training throughput, MFU, memory and generation speed of a configuration.

`python -m workbench bench --preset baby` trains the preset's model on random tokens through the
same `Trainer` that `pretrain` uses (so the figures are the real training path's), and prints:

- ms per iteration (median over a measured window after warm-up) and training tokens/s;
- model FLOPs utilisation: `flops_per_token x tokens/s` against a peak measured on the same
  device, a large matmul in the training dtype (MFU as in the PaLM paper and nanoGPT);
- peak memory (CUDA allocator peak, or the process's peak resident set on CPU);
- generation tokens/s with and without the KV cache at 128 and 512 new tokens.

Random tokens cost exactly what real ones do; quality is measured by `pretrain`, not here.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from .config import RunConfig
from .data import get_batch
from .model import GPT
from .distributed import DistInfo
from .run import setup_device
from .train import autocast_context, resolve_device, time_steps

GEN_LENGTHS = (128, 512)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul in `dtype` on `device`: the attainable peak MFU is measured against."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def training_speed(config: RunConfig, iters: int = 50, warmup: int = 10, chunked_loss: bool = True) -> dict[str, Any]:
    """Train `warmup + iters` steps on random tokens; median ms/iter of the last `iters`.

    chunked_loss=False computes the loss from the full (B, T, vocab) logits, for comparison.
    """
    tc, mc = config.train, config.model
    device = setup_device(tc, DistInfo())
    torch.manual_seed(tc.seed)
    model = GPT(mc)
    model.chunked_loss = chunked_loss
    data = np.random.default_rng(0).integers(0, mc.vocab_size, size=max(1_000_000, 4 * mc.block_size),
                                             dtype=np.int64).astype(np.uint16 if mc.vocab_size < 65536 else np.uint32)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(model, tc, lambda g: get_batch(data, mc.block_size, tc.batch_size, g, device=device),
                       warmup + iters, device)[warmup:]
    median = statistics.median(times)
    tokens = tc.batch_size * tc.grad_accum * mc.block_size
    memory = (torch.cuda.max_memory_allocated() if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": model, "device": device, "ms_per_iter": median * 1000, "tokens_per_s": tokens / median,
            "tokens_per_iter": tokens, "peak_memory_mb": memory / 2**20, "params": model.num_params(),
            "flops_per_token": model.flops_per_token()}


def _step_figures(config: RunConfig, iters: int, chunked_loss: bool) -> dict[str, float]:
    result = training_speed(config, iters, warmup=2, chunked_loss=chunked_loss)
    return {"peak_memory_mb": result["peak_memory_mb"], "ms_per_iter": result["ms_per_iter"]}


def loss_memory(config: RunConfig, iters: int = 5) -> dict[str, float]:
    """Peak memory and ms/iteration of the training step with the chunked loss and with full logits.

    Each variant is measured alone: in a fresh process on CPU (a process's peak resident set
    only grows), after resetting the allocator's peak on CUDA.
    """
    out = {}
    for name, chunked in (("chunked", True), ("full_logits", False)):
        if resolve_device(config.train.device).type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            figures = _step_figures(config, iters, chunked)
        else:
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                figures = pool.submit(_step_figures, config, iters, chunked).result()
        out.update({f"loss_{name}_{key}": value for key, value in figures.items()})
    return out


@torch.no_grad()
def generation_speed(model: GPT, device: torch.device, dtype: str, new_tokens: int, use_cache: bool,
                     prompt_len: int = 16) -> float:
    """Tokens/s of greedy decoding of `new_tokens` after a random prompt (batch of one)."""
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), device=device)
    with autocast_context(device, dtype):
        model.generate(prompt, 8, temperature=0, use_cache=use_cache)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
        _sync(device)
    return new_tokens / (time.perf_counter() - t0)


def run_bench(config: RunConfig, iters: int = 50, warmup: int = 10, generation: bool = True) -> dict[str, Any]:
    """Every figure of the benchmark as a plain dict (see the module docstring)."""
    tc = config.train
    result = training_speed(config, iters, warmup)
    device = result.pop("device")
    result.pop("model")
    use_bf16 = tc.dtype == "bfloat16" or (tc.dtype == "auto" and device.type == "cuda")
    peak = peak_matmul_flops(device, torch.bfloat16 if use_bf16 else torch.float32)
    achieved = result["flops_per_token"] * result["tokens_per_s"]
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "dtype": "bfloat16" if use_bf16 else "float32", "compile": tc.compile,
        "n_layer": config.model.n_layer, "n_head": config.model.n_head, "n_embd": config.model.n_embd,
        "block_size": config.model.block_size, "batch_size": tc.batch_size, "vocab_size": config.model.vocab_size,
        **result, "achieved_tflops": achieved / 1e12, "peak_tflops": peak / 1e12, "mfu": achieved / peak,
    }
    if generation:
        # Enough context for 512 new tokens, so the cache is exercised rather than the sliding window.
        gen_config = replace(config.model, block_size=max(config.model.block_size, 16 + max(GEN_LENGTHS)))
        gen_model = GPT(gen_config).to(device).eval()
        for n in GEN_LENGTHS:
            cached = generation_speed(gen_model, device, tc.dtype, n, use_cache=True)
            plain = generation_speed(gen_model, device, tc.dtype, n, use_cache=False)
            out[f"gen{n}_cached_tokens_per_s"] = cached
            out[f"gen{n}_uncached_tokens_per_s"] = plain
            out[f"gen{n}_cache_speedup"] = cached / plain
    return out


def format_table(result: dict[str, Any]) -> str:
    rows = [
        ("device", result["device"]), ("torch", result["torch"]), ("dtype / compile", f"{result['dtype']} / {result['compile']}"),
        ("shape", f"{result['n_layer']} layers x {result['n_head']} heads x {result['n_embd']}, block {result['block_size']}, "
                  f"batch {result['batch_size']}, vocab {result['vocab_size']}"),
        ("parameters", f"{result['params']:,}"),
        ("ms / iteration (median)", f"{result['ms_per_iter']:.2f}"),
        ("training tokens / s", f"{result['tokens_per_s']:,.0f}"),
        ("achieved / peak TFLOP/s", f"{result['achieved_tflops']:.3f} / {result['peak_tflops']:.3f}"),
        ("MFU", f"{100 * result['mfu']:.1f}%"),
        ("peak memory (MB)", f"{result['peak_memory_mb']:,.0f}"),
    ]
    if "loss_chunked_peak_memory_mb" in result:
        rows.append(("loss: chunked / full logits, peak MB", f"{result['loss_chunked_peak_memory_mb']:,.0f} / "
                     f"{result['loss_full_logits_peak_memory_mb']:,.0f} (ms/iter {result['loss_chunked_ms_per_iter']:.1f}"
                     f" / {result['loss_full_logits_ms_per_iter']:.1f})"))
    for n in GEN_LENGTHS:
        if f"gen{n}_cached_tokens_per_s" in result:
            rows.append((f"generate {n}: cached / uncached tok/s",
                         f"{result[f'gen{n}_cached_tokens_per_s']:,.0f} / {result[f'gen{n}_uncached_tokens_per_s']:,.0f} "
                         f"({result[f'gen{n}_cache_speedup']:.1f}x)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

