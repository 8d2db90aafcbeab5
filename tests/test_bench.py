"""The benchmark command: every figure follows from the times measured (checked on a fake clock, so
the arithmetic is exact and no test depends on how fast or busy the machine is), and the command
prints a table and writes the figures as JSON."""

import json
import time

import pytest
import torch

from workbench import bench
from workbench.__main__ import main
from workbench.bench import generation_speed, peak_matmul_flops, run_bench
from workbench.config import ModelConfig, preset
from workbench.model import GPT


class FakeClock:
    """Stands in for time.perf_counter: time passes only when the test says so (or `tick` per reading)."""

    def __init__(self, tick: float = 0.0):
        self.now, self.tick = 1000.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now


def test_bench_figures_follow_from_the_step_times(monkeypatch):
    """Each micro-batch takes 10 ms, except in the 4 warm-up steps (1 s each); the matmul peak is 2 TFLOP/s;
    generation runs at 400 tokens/s with the cache and 100 without."""
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    real_get_batch, drawn, peaks = bench.get_batch, [], []

    def get_batch(*args, **kwargs):
        drawn.append(1)
        clock.now += 1.0 if len(drawn) <= 2 * 4 else 0.010
        return real_get_batch(*args, **kwargs)

    def peak(device, dtype, *args, **kwargs):
        peaks.append((device.type, dtype))
        return 2e12

    def generation(model, device, dtype, new_tokens, use_cache):
        generated.append((model.config.block_size, new_tokens, use_cache))
        return 400.0 if use_cache else 100.0

    generated = []
    monkeypatch.setattr(bench, "get_batch", get_batch)
    monkeypatch.setattr(bench, "peak_matmul_flops", peak)
    monkeypatch.setattr(bench, "generation_speed", generation)
    config = preset("smoke", model={"vocab_size": 65}, train={"device": "cpu", "grad_accum": 2})
    r = run_bench(config, iters=3, warmup=4)
    assert len(drawn) == 2 * (4 + 3)
    assert r["ms_per_iter"] == pytest.approx(20.0)  # the median of the 3 measured steps, warm-up left out
    assert r["tokens_per_iter"] == 2 * 8 * 32 and r["tokens_per_s"] == pytest.approx(512 / 0.020)
    assert r["params"] == 28_576 and r["flops_per_token"] == GPT(config.model).flops_per_token()
    assert r["achieved_tflops"] == pytest.approx(r["flops_per_token"] * 512 / 0.020 / 1e12)
    assert peaks == [("cpu", torch.float32)] and r["dtype"] == "float32"  # fp32 on a CPU unless bf16 is asked for
    assert r["peak_tflops"] == pytest.approx(2.0) and r["mfu"] == pytest.approx(r["achieved_tflops"] / 2.0)
    # generation runs on a copy with room for 16 prompt + 512 new tokens: the cache is used, never a sliding window
    assert generated == [(528, 128, True), (528, 128, False), (528, 512, True), (528, 512, False)]
    assert r["gen128_cached_tokens_per_s"] == 400 and r["gen512_uncached_tokens_per_s"] == 100
    assert r["gen128_cache_speedup"] == r["gen512_cache_speedup"] == 4.0


def test_matmul_peak_and_generation_speed_follow_from_their_clocks(monkeypatch):
    monkeypatch.setattr(time, "perf_counter", FakeClock(tick=0.001))  # every reading 1 ms after the last
    assert peak_matmul_flops(torch.device("cpu"), torch.float32, n=64, repeats=3) == pytest.approx(2 * 64**3 / 0.001)

    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    model = GPT(ModelConfig(vocab_size=32, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    calls = []

    def generate(prompt, max_new_tokens, temperature, use_cache):
        calls.append((max_new_tokens, use_cache))
        clock.now += 0.5
        return prompt

    monkeypatch.setattr(model, "generate", generate)
    assert generation_speed(model, torch.device("cpu"), "auto", 100, use_cache=True) == pytest.approx(100 / 0.5)
    assert calls == [(8, True), (100, True)]  # a short warm-up, then the one timed call


def test_bench_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--preset", "smoke", "--iters", "3", "--warmup", "1", "--no-generation",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ms / iteration (median)" in printed and "MFU" in printed
    figures = json.loads(out.read_text())
    assert figures["n_layer"] == 2 and figures["vocab_size"] == 65 and "gen128_cached_tokens_per_s" not in figures
    assert f"{figures['ms_per_iter']:.2f}" in printed and f"{100 * figures['mfu']:.1f}%" in printed


def test_taps_bypassed_gives_the_same_logits_fires_no_hook_and_is_undone():
    from workbench.bench import taps_bypassed
    from workbench.model import HookPoint

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=8)).eval()
    idx = torch.randint(0, 20, (2, 8))
    plain = model(idx)[0]
    seen = []
    with model.hooks([("hook_ln_f", lambda x, hook: seen.append(1))]):
        with taps_bypassed():
            bypassed = model(idx)[0]
        assert seen == []  # the tap's call was removed, so its hook did not fire
        model(idx)
        assert seen == [1]  # and it is back afterwards
    assert torch.equal(bypassed, plain) and "__call__" not in HookPoint.__dict__


def test_tap_overhead_compares_the_two_builds_alternately(monkeypatch):
    from workbench.model import HookPoint

    calls = []
    monkeypatch.setattr(bench, "training_speed", lambda config, iters, warmup: calls.append(
        "__call__" in HookPoint.__dict__) or {"ms_per_iter": 12.0 if "__call__" in HookPoint.__dict__ else 12.6})
    result = bench.tap_overhead(preset("smoke"), repeats=2)
    assert calls == [False, True, False, True]
    assert result["taps_unused_ms_per_iter"] == 12.6 and result["no_taps_ms_per_iter"] == 12.0
    assert result["ratio"] == pytest.approx(1.05)
