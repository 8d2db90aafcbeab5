"""Speed benchmark: training throughput, MFU, memory and generation speed of a configuration.

`python -m workbench bench --preset baby` trains the preset's model on random tokens through the
same `Trainer` that `pretrain` uses (so the figures are the real training path's), and prints:

- ms per iteration (median over a measured window after warm-up) and training tokens/s;
- model FLOPs utilisation: `flops_per_token x tokens/s` against a peak measured on the same
  device right after training, a large matmul in the training dtype (MFU as in the PaLM paper and
  nanoGPT; measured after the steps, in the state they ran in: on a cold GPU it reads higher);
- peak memory (CUDA allocator peak, or the process's peak resident set on CPU);
- generation tokens/s with and without the KV cache at 128 and 512 new tokens (`GPT.generate`,
  medians of five turns each, taken in alternation);
- the generation engine (`workbench.generate`) in the inference dtype (bf16 weights on CUDA),
  eager and compiled, at batch 1 and 16, 128 and 512 new tokens: time to first token, prefill
  and decode tokens/s; Hugging Face `generate` on the same weights (exported with `export_hf`,
  same prompt, greedy: the share of identical tokens is shown) with the ratio (medians of five
  turns each, taken in alternation with ours in its fastest mode); on a CPU, int8
  dynamic quantization's speed and its greedy-token agreement with the float model.

With `--step-profile`, where the step's time goes (`step_profile`): a few steps under
`torch.profiler`, their time split by kind of work (matmul, attention, LayerNorm, activation, loss,
casts and copies, optimizer, clipping) and, on CUDA, the time no kernel was running and how long
the host takes to launch a step (`host_launch_ms`).

Random tokens cost exactly what real ones do; quality is measured by `pretrain`, not here.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.nn.attention import sdpa_kernel

from .config import RunConfig
from .data import get_batch
from .generate import Engine, inference_model
from .model import GPT, INFERENCE_BACKENDS, HookPoint
from .distributed import DistInfo
from .run import setup_device
from .train import StepGraph, autocast_context, resolve_device, time_steps, uses_bf16

GEN_LENGTHS = (128, 512)  # new tokens per generation figure
TURNS = 5  # a compared pair is timed this many times each, in alternation; their medians are compared
GEN_BATCHES = (1, 16)  # prompts decoded together
PROMPT_LEN = 16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _in_turns(rounds: int, *timers) -> list[list]:
    """Call the timers one after another, `rounds` times over: each one's results in order. Timed in
    alternation, two paths meet the same drift in the machine's speed, so their medians compare."""
    results: list[list] = [[] for _ in timers]
    for _ in range(rounds):
        for out, timer in zip(results, timers):
            out.append(timer())
    return results


def matmul_peaks(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10,
                 seconds: float | None = None) -> dict[str, float]:
    """FLOP/s of back-to-back n x n matmuls in `dtype` on `device`, after three warm-ups: {"median", "best"}
    over `repeats` of them, or more, until `seconds` have passed. MFU is measured against the median.

    On CUDA each matmul is timed by CUDA events and `seconds` defaults to 2: a GPU starts a burst at its
    idle clock and settles at its power limit within a second, so a short burst measures how warm the GPU
    was (an H200: 785 TFLOP/s over ten matmuls when idle, 618 right after training, in one process),
    while the 2-second median held at 672-679 both times (best single matmul 798-806). On a CPU
    (`seconds` 0) each is timed by the clock.
    """
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 2048)
    seconds = (2.0 if cuda else 0.0) if seconds is None else seconds
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    times, events = [], []
    end = time.perf_counter() + seconds
    while len(times) + len(events) < repeats or time.perf_counter() < end:
        if cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            stop.record()
            events.append((start, stop))
            if len(events) % 50 == 0:  # keep the queue short, so the deadline is the GPU's time too
                stop.synchronize()
        else:
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    _sync(device)
    times += [start.elapsed_time(stop) / 1000 for start, stop in events]
    return {"median": 2 * n**3 / statistics.median(times), "best": 2 * n**3 / min(times)}


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10,
                      seconds: float | None = None) -> float:
    """The matmul FLOP/s MFU is measured against: the median of `matmul_peaks`."""
    return matmul_peaks(device, dtype, n, repeats, seconds)["median"]


def random_batches(config: RunConfig, device: torch.device):
    """The Trainer's `next_batch` for speed measurements: batches drawn as `pretrain` draws them, from
    uniform random token ids stored in the dtype `pretrain` stores."""
    mc, batch_size = config.model, config.train.batch_size
    data = np.random.default_rng(0).integers(0, mc.vocab_size, size=max(1_000_000, 4 * mc.block_size),
                                             dtype=np.int64).astype(np.uint16 if mc.vocab_size < 65536 else np.uint32)
    return lambda g: get_batch(data, mc.block_size, batch_size, g, device=device)


def _bench_model(config: RunConfig, chunked_loss: bool | None = None) -> GPT:
    """The GPT a speed measurement trains: seeded as `pretrain` seeds it, with the loss asked for
    (`training_speed`)."""
    torch.manual_seed(config.train.seed)
    model = GPT(config.model)
    model.chunked_loss = chunked_loss
    return model


def training_speed(config: RunConfig, iters: int = 50, warmup: int = 10,
                   chunked_loss: bool | None = None) -> dict[str, Any]:
    """Train `warmup + iters` steps on random tokens; median ms/iter of the last `iters`.

    chunked_loss: True/False force the chunked loss or full (B, T, vocab) logits (`GPT.chunked_loss`);
    None leaves the model's choice by device.
    """
    tc, mc = config.train, config.model
    device = setup_device(tc, DistInfo())
    model = _bench_model(config, chunked_loss)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(model, tc, random_batches(config, device), warmup + iters, device)[warmup:]
    median = statistics.median(times)
    tokens = tc.batch_size * tc.grad_accum * mc.block_size
    memory = (torch.cuda.max_memory_allocated() if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": model, "device": device, "ms_per_iter": median * 1000, "tokens_per_s": tokens / median,
            "tokens_per_iter": tokens, "peak_memory_mib": memory / 2**20, "params": model.num_params(),
            "flops_per_token": model.flops_per_token()}


# What a kernel (CUDA) or operator (CPU) does, from its name: the first kind with a matching fragment.
# Compiled kernels are named after the operations fused into them (triton_poi_fused_..._gelu_...).
KINDS = (
    ("attention", ("sdpa", "fmha", "flash_attention", "flash_fwd", "flash_bwd", "attention", "cudnn::fusion")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "splitkreduce", "aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer", ("adam",)),
    ("gradient clipping", ("lpnorm", "normtwo", "norm_two", "foreach_norm", "linalg_vector_norm", "_foreach_mul",
                           "binaryopscalartensorfunctor", "clamp")),  # (the foreach multiply by the clip factor)
    ("loss", ("softmax", "nll_loss", "cross_entropy", "chunkedcrossentropy")),
    ("layer norm", ("layer_norm",)),
    ("activation", ("gelu", "relu")),
    ("embedding", ("embedding",)),
    ("casts and copies", ("_to_copy", "copy_", "cat", "transpose", "clone", "memcpy")),
)


def kernel_kind(name: str) -> str:
    """The kind of work a profiled kernel or operator does (`KINDS`), or "other"."""
    name = name.lower()
    return next((kind for kind, parts in KINDS if any(p in name for p in parts)), "other")


def host_launch_ms(trainer, trials: int = 5, max_cycles: int = 2**34) -> float | None:
    """Milliseconds the host takes to launch one training step on CUDA while the GPU is held busy (a
    sleep kernel queued ahead of the step), so that nothing waits on the device: Python, the framework
    and the kernel launches alone. Near the step's time, the step is bound by the host and faster
    kernels gain little; fewer launches (CUDA graphs) gain. None on a CPU (host and device are one).

    Logging is off while it measures (a logging step reads the loss, which waits for the device; with
    log_interval 1 every step would), evaluation steps run untimed, and a trial whose sleep ran out
    before the launches did is repeated with a sleep twice as long, up to `max_cycles` (~9 s of
    sleep): past that something in the step itself waits for the device, and it raises. The trainer
    goes on `trials` steps or more; the step times it records for them include the sleeps.
    Median of `trials`.
    """
    if trainer.device.type != "cuda":
        return None
    cfg, cycles, times = trainer.config, 2 * 10**8, []  # ~0.1 s at the GPU's clock
    trainer.config = replace(cfg, log_interval=10**9)
    try:
        while len(times) < trials:
            step = trainer.step + 1
            if step % cfg.eval_interval == 0 or step >= cfg.max_iters:
                trainer.fit(until=step)
                continue
            if cycles > max_cycles:
                raise RuntimeError("host_launch_ms: the training step waits for the GPU (something in it "
                                   "synchronises), so the host's launch time cannot be measured apart")
            torch.cuda.synchronize()
            torch.cuda._sleep(cycles)
            slept = torch.cuda.Event()
            slept.record()  # completes when the sleep does
            t0 = time.perf_counter()
            trainer.fit(until=step)
            elapsed = time.perf_counter() - t0
            if slept.query():  # the GPU was idle before the host finished: not a clean trial
                cycles *= 2
            else:
                times.append(elapsed)
    finally:
        trainer.config = cfg
    torch.cuda.synchronize()
    return 1000 * statistics.median(times)


def _warmup_steps(tc) -> int:
    """Steps to run before timing or profiling the Trainer's step: one logging window (so compiling is
    over) and, with cuda_graph, the graph's eager steps and its capture (the replayed step counts)."""
    return max(2, tc.log_interval, StepGraph.WARMUP + 1 if tc.cuda_graph else 0)


def step_profile(config: RunConfig, steps: int = 5, warmup: int | None = None, top: int = 15) -> dict[str, Any]:
    """Where the training step's time goes: `steps` steps of the Trainer's step on random tokens under
    `torch.profiler`, after `warmup` steps (default: one logging window, so compiling is over, and
    with `cuda_graph` the steps before the graph's first replay).

    On CUDA the time is the GPU kernels' (the rest of the step is time no kernel ran: launch gaps,
    waiting for the host), and `host_launch_ms` adds how long the host takes to launch a step; on a
    CPU the operators' own time (the rest: Python and the framework between operators). The profiler
    slows the host, so the step takes longer than in `bench`.

    Returns:
        {"device", "steps", "ms_per_step", "busy_ms", "idle_ms", "kinds": {kind: ms a step, largest
         first}, "top": the `top` largest kernels or operators as {"name", "kind", "ms", "calls"} a step,
         "host_launch_ms": None on a CPU}.
    """
    from torch.profiler import ProfilerActivity, profile

    from .train import Trainer

    tc = config.train
    device = setup_device(tc, DistInfo())
    # max_iters beyond the steps run here: fit() pauses at each `until`, never reaching the final evaluation
    tc = replace(tc, max_iters=10**6, eval_interval=10**6, patience=None)
    trainer = Trainer(_bench_model(config), tc, random_batches(config, device),
                      lambda m: {"val_loss": 0.0}, progress=False, device=device)
    warmup = warmup if warmup is not None else _warmup_steps(tc)
    trainer.fit(until=warmup)
    cuda = device.type == "cuda"
    _sync(device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        t0 = time.perf_counter()
        trainer.fit(until=warmup + steps)
        _sync(device)
        wall = time.perf_counter() - t0
    rows = []
    for e in prof.key_averages():
        if "#" in e.key:  # annotations (Optimizer.step#AdamW.step) span kernels counted on their own
            continue
        us = e.device_time_total if cuda else e.self_cpu_time_total
        if (not cuda or e.device_type.name == "CUDA") and us > 0:
            rows.append({"name": e.key, "kind": kernel_kind(e.key), "ms": us / 1000 / steps, "calls": e.count / steps})
    rows.sort(key=lambda r: -r["ms"])
    kinds: dict[str, float] = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0.0) + r["ms"]
    busy, ms = sum(kinds.values()), 1000 * wall / steps
    return {"device": str(device), "steps": steps, "ms_per_step": ms, "busy_ms": busy, "idle_ms": ms - busy,
            "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])), "top": rows[:top],
            "host_launch_ms": host_launch_ms(trainer)}


def format_profile(result: dict[str, Any]) -> str:
    cuda = result["device"].startswith("cuda")
    busy, rest = ("kernels", "no kernel running") if cuda else ("operators", "between operators (Python, framework)")
    ms = result["ms_per_step"]
    lines = [f"step profile ({result['steps']} steps under torch.profiler, {result['device']}): {ms:.2f} ms a step; "
             f"{busy} {result['busy_ms']:.2f} ms, {rest} {result['idle_ms']:.2f} ms"]
    lines += [f"  {kind:<18} {t:8.2f} ms  {100 * t / ms:5.1f}%" for kind, t in result["kinds"].items()]
    lines.append(f"  largest {busy} (ms a step, calls a step):")
    lines += [f"  {r['ms']:8.3f} {r['calls']:6.1f}  [{r['kind']}] {r['name'][:110]}" for r in result["top"]]
    if result.get("host_launch_ms") is not None:
        lines.append(f"  host: {result['host_launch_ms']:.2f} ms to launch a step with the GPU held busy "
                     f"(near the step's time, the host bounds it)")
    return "\n".join(lines)


def _step_figures(config: RunConfig, iters: int, chunked_loss: bool) -> dict[str, float]:
    # Steps between two logging steps share their window's mean time (`time_steps`): warm up for a whole
    # window, so the first step's compilation is not spread over the measured ones.
    window = config.train.log_interval
    result = training_speed(config, max(iters, window), warmup=_warmup_steps(config.train), chunked_loss=chunked_loss)
    return {"peak_memory_mib": result["peak_memory_mib"], "ms_per_iter": result["ms_per_iter"]}


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


@contextmanager
def taps_bypassed():
    """Within the block every `HookPoint` call is a bare `lambda x: x` (not even the check for hooks):
    the GPT as if it had no taps, the baseline of `tap_overhead`. Hooks do not fire inside."""
    call = HookPoint.__call__
    HookPoint.__call__ = lambda self, x: x
    try:
        yield
    finally:
        HookPoint.__call__ = call


def tap_overhead(config: RunConfig, iters: int = 50, warmup: int = 10, repeats: int = 3) -> dict[str, float]:
    """What the named taps cost training when nothing is hooked: median ms/iteration of the GPT as
    built against the same GPT with the taps bypassed (`taps_bypassed`), alternating `repeats` times
    so that drifts in machine load hit both. A benchmark to run by hand, not a timed test:

        python -c "from workbench.bench import tap_overhead; from workbench.config import preset; print(tap_overhead(preset('baby')))"
    """
    with_taps, without = [], []
    for _ in range(repeats):
        with_taps.append(training_speed(config, iters, warmup)["ms_per_iter"])
        with taps_bypassed():
            without.append(training_speed(config, iters, warmup)["ms_per_iter"])
    a, b = statistics.median(with_taps), statistics.median(without)
    return {"taps_unused_ms_per_iter": a, "no_taps_ms_per_iter": b, "ratio": a / b,
            "runs_taps_unused": with_taps, "runs_no_taps": without}


@torch.no_grad()
def generation_speed(model: GPT, device: torch.device, dtype: str, new_tokens: int, use_cache: bool,
                     prompt_len: int = PROMPT_LEN) -> float:
    """Tokens/s of `GPT.generate`'s greedy decoding of `new_tokens` after a random prompt (batch of one),
    with its KV cache (the eager engine) or without (the whole window every step)."""
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), device=device)
    with autocast_context(device, dtype):
        model.generate(prompt, 8, temperature=0, use_cache=use_cache)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
        _sync(device)
    return new_tokens / (time.perf_counter() - t0)


@torch.no_grad()
def engine_speed(engine: Engine, batch: int, new_tokens: int, prompt_len: int = PROMPT_LEN,
                 seed: int = 0) -> dict[str, Any]:
    """Time to first token, prefill and decode speed of greedy decoding of random prompts (batch, prompt_len).

    A short warm-up run first (it compiles a compiled engine's step). The first token needs the
    prefill; the rest are decode steps. Returns the figures and the tokens (batch, new_tokens).
    """
    device = engine.device
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, engine.model.config.vocab_size, (batch, prompt_len), generator=g).to(device)
    for _ in engine.stream(prompts, 8, temperature=0):
        pass
    _sync(device)
    t0 = time.perf_counter()
    stream = engine.stream(prompts, new_tokens, temperature=0)
    columns = [next(stream)]
    _sync(device)
    t1 = time.perf_counter()
    columns.extend(stream)
    _sync(device)
    t2 = time.perf_counter()
    return {"batch": batch, "new_tokens": new_tokens, "ttft_ms": 1000 * (t1 - t0),
            "prefill_tokens_per_s": batch * prompt_len / (t1 - t0),
            "decode_tokens_per_s": batch * (new_tokens - 1) / (t2 - t1) if new_tokens > 1 else float("nan"),
            "tokens_per_s": batch * new_tokens / (t2 - t0), "tokens": torch.cat(columns, dim=1).cpu()}


def hf_twin(model: GPT):
    """Hugging Face's `GPT2LMHeadModel` with the same weights (`GPT.export_hf`), in the model's device and dtype."""
    from transformers import GPT2LMHeadModel

    from .capture import no_hf_progress_bars

    with no_hf_progress_bars(), tempfile.TemporaryDirectory() as tmp:  # no loading bar between the table's lines
        model.export_hf(tmp)
        hf = GPT2LMHeadModel.from_pretrained(tmp)
    return hf.to(device=model.lm_head.weight.device, dtype=model.lm_head.weight.dtype).eval()


@torch.no_grad()
def hf_generate_speed(hf, new_tokens: int, prompt_len: int = PROMPT_LEN, seed: int = 0) -> dict[str, Any]:
    """Tokens/s of Hugging Face `generate` (greedy, batch of one) on `hf_twin`'s model.

    The same random prompt as `engine_speed(..., batch=1, seed=seed)`. Returns tokens/s (new_tokens
    over the whole call, prefill included) and the tokens (1, new_tokens).
    """
    device = hf.device
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, hf.config.vocab_size, (1, prompt_len), generator=g).to(device)
    kwargs = dict(attention_mask=torch.ones_like(prompt), do_sample=False, pad_token_id=0)
    with sdpa_kernel(INFERENCE_BACKENDS):  # the kernels ours decodes with: no cuDNN plan per new length
        hf.generate(prompt, max_new_tokens=8, min_new_tokens=8, **kwargs)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        out = hf.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        _sync(device)
    return {"tokens_per_s": new_tokens / (time.perf_counter() - t0), "tokens": out[:, prompt_len:].cpu()}


def decoding_figures(model: GPT, lengths: Sequence[int] = GEN_LENGTHS, batches: Sequence[int] = GEN_BATCHES,
                     compile: bool = True, hf: bool = True, int8: bool | None = None,
                     hf_rounds: int = TURNS) -> dict[str, Any]:
    """The engine's decoding speed, eager and compiled, at every batch size and length; Hugging Face
    `generate` on the same weights at batch 1; int8 on a CPU.

    Args:
        model: the GPT in the dtype to decode in (`generate.inference_model`: bf16 weights on CUDA).
        int8: also time an int8-quantized copy of a float32 model (None: on a CPU).
        hf_rounds: HF and ours (its fastest mode at batch 1) are timed this many times each, in turn.
    Returns:
        {"rows": one dict per (mode, batch, new_tokens): ttft_ms, prefill/decode/overall tokens_per_s;
         "hf": per length, the median HF tokens/s, ours (the fastest mode), the ratio of the medians
         and the share of greedy tokens that agree; "int8": batch-1 tokens/s and greedy agreement
         with the float model}.
    """
    device, dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
    engines = {"eager": Engine(model, compile=False)}
    if compile:
        engines["compiled"] = Engine(model, compile=True)
    rows, ours = [], {}
    for mode, engine in engines.items():
        for batch in batches:
            for n in lengths:
                r = engine_speed(engine, batch, n)
                if batch == 1:
                    ours.setdefault(n, {})[mode] = r
                rows.append({"mode": mode, **{k: v for k, v in r.items() if k != "tokens"}})
    out: dict[str, Any] = {"inference_dtype": str(dtype).removeprefix("torch."), "rows": rows}
    layout = (model.config.pos_encoding, model.config.activation, model.config.tie_weights)
    if hf and 1 in batches and layout == ("learned", "gelu", True):
        twin, out["hf"] = hf_twin(model), []
        for n in lengths:
            # ours in its fastest mode against HF, in turns
            mode = max(ours[n], key=lambda m: ours[n][m]["tokens_per_s"])
            theirs, mine = _in_turns(hf_rounds, lambda: hf_generate_speed(twin, n),
                                     lambda: engine_speed(engines[mode], 1, n))
            hf_speed = statistics.median(r["tokens_per_s"] for r in theirs)
            our_speed = statistics.median(r["tokens_per_s"] for r in mine)
            out["hf"].append({"new_tokens": n, "mode": mode, "rounds": hf_rounds, "hf_tokens_per_s": hf_speed,
                              "ours_tokens_per_s": our_speed, "ratio": our_speed / hf_speed,
                              "token_agreement": (theirs[0]["tokens"] == mine[0]["tokens"]).float().mean().item()})
    if (int8 if int8 is not None else device.type == "cpu") and 1 in batches and dtype == torch.float32:
        n = min(lengths)
        quantized = engine_speed(Engine(inference_model(model, "int8"), compile=False), 1, n)
        reference = ours[n]["eager"]  # the eager engine in the inference dtype (float32 on a CPU)
        out["int8"] = {"new_tokens": n, "tokens_per_s": quantized["tokens_per_s"],
                       "float_tokens_per_s": reference["tokens_per_s"],
                       "token_agreement": (quantized["tokens"] == reference["tokens"]).float().mean().item()}
    return out


def run_bench(config: RunConfig, iters: int = 50, warmup: int = 10, generation: bool = True,
              compile_generation: bool = True, hf: bool = True) -> dict[str, Any]:
    """Every figure of the benchmark as a plain dict (see the module docstring).

    Generation runs in the training dtype's inference form on CUDA (a bf16 copy of the weights when
    training uses bf16, the default there) and in float32 on a CPU (`generate.inference_model`).
    compile_generation adds the compiled engine beside the eager one; hf adds Hugging Face
    `generate` on the same weights.
    """
    tc = config.train
    result = training_speed(config, iters, warmup)
    device = result.pop("device")
    result.pop("model")
    use_bf16 = uses_bf16(device, tc.dtype)
    peaks = matmul_peaks(device, torch.bfloat16 if use_bf16 else torch.float32)
    achieved = result["flops_per_token"] * result["tokens_per_s"]
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "dtype": "bfloat16" if use_bf16 else "float32", "compile": tc.compile,
        "split_qkv": config.model.split_qkv, "cuda_graph": tc.cuda_graph,
        "n_layer": config.model.n_layer, "n_head": config.model.n_head, "n_embd": config.model.n_embd,
        "block_size": config.model.block_size, "batch_size": tc.batch_size, "vocab_size": config.model.vocab_size,
        **result, "achieved_tflops": achieved / 1e12, "peak_tflops": peaks["median"] / 1e12, "mfu": achieved / peaks["median"],
        "best_matmul_tflops": peaks["best"] / 1e12, "mfu_of_best_matmul": achieved / peaks["best"],
    }
    if generation:
        # Enough context for 512 new tokens, so the cache is exercised rather than the sliding window.
        gen_config = replace(config.model, block_size=max(config.model.block_size, PROMPT_LEN + max(GEN_LENGTHS)))
        gen_dtype = "bfloat16" if use_bf16 and device.type == "cuda" else "float32"
        gen_model = inference_model(GPT(gen_config).to(device).eval(), gen_dtype)
        for n in GEN_LENGTHS:
            cached, plain = _in_turns(TURNS, lambda: generation_speed(gen_model, device, "float32", n, use_cache=True),
                                      lambda: generation_speed(gen_model, device, "float32", n, use_cache=False))
            cached, plain = statistics.median(cached), statistics.median(plain)  # weights already in the dtype
            out[f"gen{n}_cached_tokens_per_s"] = cached
            out[f"gen{n}_uncached_tokens_per_s"] = plain
            out[f"gen{n}_cache_speedup"] = cached / plain
        out["decoding"] = decoding_figures(gen_model, compile=compile_generation, hf=hf)
    return out


def format_table(result: dict[str, Any]) -> str:
    options = " / q, k, v from three matmuls" if result.get("split_qkv") else ""
    options += " / the step replayed as one CUDA graph" if result.get("cuda_graph") else ""
    rows = [
        ("device", result["device"]), ("torch", result["torch"]), ("dtype / compile", f"{result['dtype']} / {result['compile']}{options}"),
        ("shape", f"{result['n_layer']} layers x {result['n_head']} heads x {result['n_embd']}, block {result['block_size']}, "
                  f"batch {result['batch_size']}, vocab {result['vocab_size']}"),
        ("parameters", f"{result['params']:,}"),
        ("ms / iteration (median)", f"{result['ms_per_iter']:.2f}"),
        ("training tokens / s", f"{result['tokens_per_s']:,.0f}"),
        ("achieved / peak TFLOP/s", f"{result['achieved_tflops']:.3f} / {result['peak_tflops']:.3f} (matmuls' median; "
                                    f"best single {result['best_matmul_tflops']:.3f})"),
        ("MFU", f"{100 * result['mfu']:.1f}% ({100 * result['mfu_of_best_matmul']:.1f}% of the best single matmul)"),
        ("peak memory (MiB)", f"{result['peak_memory_mib']:,.0f}"),
    ]
    if "loss_chunked_peak_memory_mib" in result:
        rows.append(("loss: chunked / full logits, peak MiB", f"{result['loss_chunked_peak_memory_mib']:,.0f} / "
                     f"{result['loss_full_logits_peak_memory_mib']:,.0f} (ms/iter {result['loss_chunked_ms_per_iter']:.1f}"
                     f" / {result['loss_full_logits_ms_per_iter']:.1f})"))
    for n in GEN_LENGTHS:
        if f"gen{n}_cached_tokens_per_s" in result:
            rows.append((f"generate {n}: cached / uncached tok/s",
                         f"{result[f'gen{n}_cached_tokens_per_s']:,.0f} / {result[f'gen{n}_uncached_tokens_per_s']:,.0f} "
                         f"({result[f'gen{n}_cache_speedup']:.1f}x)"))
    decoding = result.get("decoding")
    if decoding:
        rows.append(("decoding dtype", decoding["inference_dtype"]))
        for r in decoding["rows"]:
            rows.append((f"{r['mode']} batch {r['batch']}, {r['new_tokens']} new: TTFT ms / prefill / decode tok/s",
                         f"{r['ttft_ms']:,.1f} / {r['prefill_tokens_per_s']:,.0f} / {r['decode_tokens_per_s']:,.0f}"))
        for r in decoding.get("hf", []):
            rows.append((f"HF generate {r['new_tokens']} new, batch 1: HF / ours ({r['mode']}) tok/s",
                         f"{r['hf_tokens_per_s']:,.0f} / {r['ours_tokens_per_s']:,.0f} ({r['ratio']:.1f}x, "
                         f"{100 * r['token_agreement']:.0f}% same greedy tokens)"))
        if "int8" in decoding:
            r = decoding["int8"]
            rows.append((f"int8 {r['new_tokens']} new, batch 1: int8 / float tok/s",
                         f"{r['tokens_per_s']:,.0f} / {r['float_tokens_per_s']:,.0f} "
                         f"({100 * r['token_agreement']:.0f}% same greedy tokens)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

