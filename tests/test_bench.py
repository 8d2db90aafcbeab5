"""The benchmark command: every figure follows from the times measured (checked on a fake clock, so
the arithmetic is exact and no test depends on how fast or busy the machine is), and the command
prints a table and writes the figures as JSON."""

import json
import time

import pytest
import torch
from helpers import FakeClock, fake_cuda_graphs

from workbench import bench
from workbench import train as train_module
from workbench.__main__ import main
from workbench.bench import (decoding_figures, engine_speed, format_table, generation_speed, peak_matmul_flops,
                             run_bench)
from workbench.config import ModelConfig, TrainConfig, preset
from workbench.generate import Engine
from workbench.model import GPT


@pytest.mark.parametrize("bf16_speedup,dtype", [(1.0, torch.float32), (3.0, torch.bfloat16)])
def test_bench_figures_follow_from_the_step_times(monkeypatch, bf16_speedup, dtype):
    """Each micro-batch takes 10 ms, except in the 4 warm-up steps (1 s each); the matmul peak is 2 TFLOP/s;
    generation runs at 400 tokens/s with the cache and 100 without. A CPU whose bf16 matmuls are not
    BF16_MIN_SPEEDUP times faster trains in fp32, one whose are in bf16 (MFU then against the bf16 peak);
    generation on a CPU stays fp32 either way."""
    monkeypatch.setattr(train_module, "cpu_bf16_speedup", lambda: bf16_speedup)
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    real_get_batch, drawn, peaks = bench.get_batch, [], []

    def get_batch(*args, **kwargs):
        drawn.append(1)
        clock.now += 1.0 if len(drawn) <= 2 * 4 else 0.010
        return real_get_batch(*args, **kwargs)

    def peak(device, dtype, *args, **kwargs):
        peaks.append((device.type, dtype))
        return {"median": 2e12, "best": 4e12}

    def generation(model, device, dtype, new_tokens, use_cache):
        generated.append((model.config.block_size, new_tokens, use_cache))
        return next(speeds[use_cache])  # a median of five, whatever the order

    def decoding(model, compile, hf):
        decoded.append((model.config.block_size, model.lm_head.weight.dtype, compile, hf))
        return {"rows": []}

    generated, decoded = [], []
    speeds = {True: iter([400.0, 900.0, 10.0, 50.0, 450.0, 400.0, 700.0, 20.0, 300.0, 500.0]),
              False: iter([100.0, 5.0, 300.0, 120.0, 1.0, 100.0, 1.0, 200.0, 50.0, 150.0])}
    monkeypatch.setattr(bench, "get_batch", get_batch)
    monkeypatch.setattr(bench, "matmul_peaks", peak)
    monkeypatch.setattr(bench, "generation_speed", generation)
    monkeypatch.setattr(bench, "decoding_figures", decoding)
    config = preset("smoke", model={"vocab_size": 65}, train={"device": "cpu", "grad_accum": 2})
    r = run_bench(config, iters=3, warmup=4, hf=False)
    assert len(drawn) == 2 * (4 + 3)
    assert r["ms_per_iter"] == pytest.approx(20.0)  # the median of the 3 measured steps, warm-up left out
    assert r["tokens_per_iter"] == 2 * 8 * 32 and r["tokens_per_s"] == pytest.approx(512 / 0.020)
    assert r["params"] == 28_576 and r["flops_per_token"] == GPT(config.model).flops_per_token()
    assert r["achieved_tflops"] == pytest.approx(r["flops_per_token"] * 512 / 0.020 / 1e12)
    assert peaks == [("cpu", dtype)] and r["dtype"] == str(dtype).removeprefix("torch.")
    assert r["peak_tflops"] == pytest.approx(2.0) and r["mfu"] == pytest.approx(r["achieved_tflops"] / 2.0)
    assert r["best_matmul_tflops"] == pytest.approx(4.0) and r["mfu_of_best_matmul"] == pytest.approx(r["mfu"] / 2)
    # generation runs on a copy with room for 16 prompt + 512 new tokens: the cache is used, never a sliding window
    # cached and uncached in turn, five each per length (bench.TURNS), medians
    assert bench.TURNS == 5
    assert generated == [(528, 128, True), (528, 128, False)] * 5 + [(528, 512, True), (528, 512, False)] * 5
    assert r["gen128_cached_tokens_per_s"] == 400 and r["gen128_uncached_tokens_per_s"] == 100
    assert r["gen512_cached_tokens_per_s"] == 400 and r["gen512_uncached_tokens_per_s"] == 100
    assert r["gen128_cache_speedup"] == r["gen512_cache_speedup"] == 4.0
    assert decoded == [(528, torch.float32, True, False)] and r["decoding"] == {"rows": []}


def test_matmul_peak_and_generation_speed_follow_from_their_clocks(monkeypatch):
    monkeypatch.setattr(time, "perf_counter", FakeClock(tick=0.001))  # every reading 1 ms after the last
    assert peak_matmul_flops(torch.device("cpu"), torch.float32, n=64, repeats=3) == pytest.approx(2 * 64**3 / 0.001)

    # for `seconds`, more matmuls than `repeats`: median and best over all of them
    clock, real_matmul, matmuls = FakeClock(), torch.Tensor.__matmul__, []

    def matmul(a, b):
        matmuls.append(1)
        clock.now += 0.001 * (1 + len(matmuls) % 3)  # 1, 2 or 3 ms in turn; warm-ups included
        return real_matmul(a, b)

    with monkeypatch.context() as m:
        m.setattr(time, "perf_counter", clock)
        m.setattr(torch.Tensor, "__matmul__", matmul)
        peaks = bench.matmul_peaks(torch.device("cpu"), torch.float32, n=8, repeats=2, seconds=0.1)
    assert 3 + 0.1 / 0.002 - 1 <= len(matmuls) <= 3 + 0.1 / 0.002 + 1  # warm-ups, then until 0.1 s (2 ms each on average)
    assert peaks == {"median": pytest.approx(2 * 8**3 / 0.002), "best": pytest.approx(2 * 8**3 / 0.001)}

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
    out = tmp_path / "new" / "bench.json"  # its folder is made (it failed after the measuring)
    assert main(["bench", "--preset", "smoke", "--iters", "3", "--warmup", "1", "--no-generation",
                 "--step-profile", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ms / iteration (median)" in printed and "MFU" in printed
    figures = json.loads(out.read_text())
    assert figures["n_layer"] == 2 and figures["vocab_size"] == 65 and "gen128_cached_tokens_per_s" not in figures
    assert f"{figures['ms_per_iter']:.2f}" in printed and f"{100 * figures['mfu']:.1f}%" in printed
    profile = figures["step_profile"]
    assert f"{profile['ms_per_step']:.2f} ms a step" in printed and f"  {'matmul':<18} {profile['kinds']['matmul']:8.2f} ms" in printed


@pytest.mark.parametrize("flags, fix", [(["--iters", "0"], "--iters must be >= 1 and --warmup >= 0, got 0 and 10"),
                                        (["--warmup", "-3"], "--iters must be >= 1 and --warmup >= 0, got 50 and -3"),
                                        (["--json", "FILE/b.json"], "a file; choose another path for --json"),
                                        (["--json", "DIR"], "is a directory; choose a file path for --json"),
                                        (["--json", "FILE"], "already exists; choose a new file name")])
def test_bench_cli_refuses_what_it_could_not_finish_before_measuring(tmp_path, capsys, monkeypatch, flags, fix):
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("measured before refusing"))
    (tmp_path / "f").write_text("mine")
    flags = [str(tmp_path / "f") + "/b.json" if f == "FILE/b.json" else str(tmp_path) if f == "DIR"
             else str(tmp_path / "f") if f == "FILE" else f for f in flags]
    assert main(["bench", "--preset", "smoke", "--no-generation", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fix in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no leftover temp file
    assert (tmp_path / "f").read_text() == "mine"  # an existing file is not replaced (a corpus was, once)


@pytest.mark.parametrize("flag", ["--corpus mine.txt", "--max-iters 5", "--epochs 1", "--eval-interval 5",
                                  "--patience 2", "--parallel fsdp"])
def test_bench_has_no_flags_it_would_ignore(capsys, flag):
    with pytest.raises(SystemExit) as exit_:  # random tokens, its own --iters: these did nothing, silently
        main(["bench", "--preset", "smoke", *flag.split()])
    assert exit_.value.code == 2  # one line, naming the page that lists bench's flags
    assert capsys.readouterr().err == f"error: unrecognized arguments: {flag}; see python -m workbench bench --help\n"


def test_time_steps_runs_a_config_set_in_epochs():
    """A config whose length is in epochs (fine-tuning's) times its steps too: --iters sets them."""
    config = TrainConfig(max_iters=None, epochs=1.0, batch_size=2, device="cpu", log_interval=1)
    model = GPT(ModelConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
    batch = lambda g: (torch.randint(16, (2, 8), generator=g), torch.randint(16, (2, 8), generator=g))
    assert len(bench.time_steps(model, config, batch, 3)) == 3


def test_bench_split_qkv_trains_with_q_k_v_from_three_matmuls(monkeypatch, capsys):
    seen, real = [], bench.time_steps

    def time_steps(model, *args, **kwargs):
        seen.append({block.attn.split_qkv for block in model.transformer.h})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(bench, "time_steps", time_steps)
    for flag in ([], ["--split-qkv"]):
        assert main(["bench", "--preset", "smoke", "--iters", "2", "--warmup", "1", "--no-generation", *flag]) == 0
        assert ("q, k, v from three matmuls" in capsys.readouterr().out) == bool(flag)
    assert seen == [{False}, {True}]


@pytest.mark.parametrize("name,kind", [
    ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x64_1x4x1_cga1x1x1_kernel0_0", "attention"),
    ("void cudnn::fusion::compute_dot_do_o_specialized<true, 64>(void const*)", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
    ("nvjet_sm90_tst_192x192_64x4_2x1_v_bz_coopB_TNN", "matmul"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16>", "matmul"),
    ("aten::addmm", "matmul"),
    ("void at::native::multi_tensor_apply_kernel<FusedOptimizerTensorListMetadata<4>, FusedAdamMathFunctor<float>>", "optimizer"),
    ("aten::_fused_adamw_", "optimizer"),
    ("void at::native::multi_tensor_apply_kernel<TensorListMetadata<1>, at::native::LpNormFunctor<float>>", "gradient clipping"),
    ("void at::native::multi_tensor_apply_kernel<TensorListMetadata<1>, BinaryOpScalarTensorFunctor<float, 1, 1, 0>, "
     "std::multiplies<float>, float>", "gradient clipping"),
    ("triton_red_fused__log_softmax__log_softmax_backward_data__to_copy_arange_eq_expand_nll_loss_backward", "loss"),
    ("triton_per_fused__to_copy_add_native_layer_norm_backward_view_5", "layer norm"),
    ("triton_poi_fused__unsafe_view_gelu_gelu_backward_view_4", "activation"),
    ("aten::embedding_dense_backward", "embedding"),
    ("triton_poi_fused__unsafe_view_cat_clone_transpose_view_7", "casts and copies"),
    ("Memcpy HtoD (Pinned -> Device)", "casts and copies"),
    ("Memset (Device)", "other"),
])
def test_profiled_kernels_and_operators_are_sorted_by_kind(name, kind):
    """Real names from an H200's 124M step and a CPU's: what each kernel or operator does."""
    assert bench.kernel_kind(name) == kind


def test_step_profile_splits_the_steps_time_by_kind():
    config = preset("smoke")
    result = bench.step_profile(config, steps=3, warmup=2, top=5)
    assert result["device"] == "cpu" and result["steps"] == 3
    kinds = result["kinds"]
    assert kinds["matmul"] > 0 and kinds["attention"] > 0 and kinds["optimizer"] > 0
    assert list(kinds.values()) == sorted(kinds.values(), reverse=True)
    assert sum(kinds.values()) == pytest.approx(result["busy_ms"])
    assert result["idle_ms"] == pytest.approx(result["ms_per_step"] - result["busy_ms"])
    assert 0 < result["busy_ms"] <= 1.05 * result["ms_per_step"]  # the operators' own time fits in the step
    assert len(result["top"]) == 5 and [r["ms"] for r in result["top"]] == sorted((r["ms"] for r in result["top"]), reverse=True)
    assert all(r["kind"] == bench.kernel_kind(r["name"]) for r in result["top"])
    assert result["host_launch_ms"] is None  # host and device are one on a CPU


def test_step_profile_with_cuda_graph_profiles_replays_only(monkeypatch):
    """By default the profile starts after the graph's eager steps and its capture (on a CPU with the
    stand-in graph): 3 eager steps, the capture, then the 5 profiled steps, all replays."""
    graphs = fake_cuda_graphs(monkeypatch)
    bench.step_profile(preset("smoke", train={"cuda_graph": True}), steps=5)  # smoke logs every step
    assert (graphs[0].step_graph.eager_steps, graphs[0].step_graph.replays) == (3, 1 + 5)


class FakeLaunchTrainer:
    """What `host_launch_ms` uses of a Trainer, on a fake clock: a step that logs or evaluates waits for
    the device (50 ms), the others only launch (12 ms)."""
    device = torch.device("cuda")

    def __init__(self, clock, **config):
        self.clock, self.step = clock, 0
        self.config = TrainConfig(max_iters=1000, **config)

    def fit(self, until):
        assert until == self.step + 1
        waits = until % self.config.log_interval == 0 or until % self.config.eval_interval == 0
        self.clock.now += 0.050 if waits else 0.012
        self.step = until


def fake_gpu(monkeypatch, clock, ran_dry, sleeps, trainer):
    class Event:
        def record(self):
            pass

        def query(self):
            return next(ran_dry)

    monkeypatch.setattr(time, "perf_counter", clock)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: sleeps.append((cycles, trainer.step + 1)))


def test_host_launch_time_turns_logging_off_skips_evaluations_and_retries_when_the_gpu_ran_dry(monkeypatch):
    """With the GPU held busy, the host's time to launch a step: logging is off while it measures (with
    log_interval 1 every step would wait for the device), evaluation steps are not timed, and a trial
    whose sleep ran out first is redone with twice the sleep."""
    clock, sleeps = FakeClock(tick=0.0), []
    trainer = FakeLaunchTrainer(clock, log_interval=1, eval_interval=4)
    config = trainer.config
    fake_gpu(monkeypatch, clock, iter([True] + [False] * 10), sleeps, trainer)
    assert bench.host_launch_ms(trainer, trials=3) == pytest.approx(12.0)
    assert [c for c, _ in sleeps] == [2 * 10**8] + [4 * 10**8] * 3  # the first trial ran dry: redone, longer
    assert [step for _, step in sleeps] == [1, 2, 3, 5]  # step 4 evaluates: run, not timed
    assert trainer.config is config  # logging is back as it was


def test_host_launch_time_raises_when_the_step_itself_waits_for_the_gpu(monkeypatch):
    clock, sleeps = FakeClock(tick=0.0), []
    trainer = FakeLaunchTrainer(clock, log_interval=10, eval_interval=100)
    config = trainer.config
    fake_gpu(monkeypatch, clock, iter(lambda: True, None), sleeps, trainer)  # every sleep runs out first
    with pytest.raises(RuntimeError, match="waits for the GPU"):
        bench.host_launch_ms(trainer, max_cycles=2**31)
    assert [c for c, _ in sleeps] == [2 * 10**8 * 2**i for i in range(4)]  # doubled until past max_cycles
    assert trainer.config is config


def test_taps_bypassed_gives_the_same_logits_fires_no_hook_and_is_undone():
    from workbench.bench import taps_bypassed
    from workbench.model import HookPoint

    call = HookPoint.__call__
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
    assert torch.equal(bypassed, plain) and HookPoint.__call__ is call


def test_tap_overhead_compares_the_two_builds_alternately(monkeypatch):
    from workbench.model import HookPoint

    calls, tapped = [], HookPoint.__call__

    def training_speed(config, iters, warmup):
        bypassed = HookPoint.__call__ is not tapped
        calls.append(bypassed)
        return {"ms_per_iter": 12.0 if bypassed else 12.6}

    monkeypatch.setattr(bench, "training_speed", training_speed)
    result = bench.tap_overhead(preset("smoke"), repeats=2)
    assert calls == [False, True, False, True]
    assert result["taps_unused_ms_per_iter"] == 12.6 and result["no_taps_ms_per_iter"] == 12.0
    assert result["ratio"] == pytest.approx(1.05)


def sharp_gpt(**kw) -> GPT:
    """A tiny GPT-2-layout model with large random weights: peaked logits, so no greedy near-ties."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{"vocab_size": 40, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16,
                               "bias": False, **kw})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5)
    return model


def test_engine_speed_splits_the_first_token_from_the_decode_steps(monkeypatch):
    model = sharp_gpt()
    engine = Engine(model)
    monkeypatch.setattr(time, "perf_counter", FakeClock(tick=0.5))  # t0, first token, last token: 0.5 s apart
    r = engine_speed(engine, batch=3, new_tokens=9, prompt_len=4)
    assert r["ttft_ms"] == pytest.approx(500) and r["prefill_tokens_per_s"] == pytest.approx(3 * 4 / 0.5)
    assert r["decode_tokens_per_s"] == pytest.approx(3 * 8 / 0.5) and r["tokens_per_s"] == pytest.approx(3 * 9 / 1.0)
    prompts = torch.randint(0, 40, (3, 4), generator=torch.Generator().manual_seed(0))
    assert r["tokens"].tolist() == engine.generate(prompts, 9, temperature=0)  # the same seeded prompts


def test_decoding_figures_cover_every_mode_batch_and_length_and_agree_with_hugging_face():
    pytest.importorskip("transformers")
    model = sharp_gpt()
    d = decoding_figures(model, lengths=(4, 6), batches=(1, 2), compile=False, hf=True, int8=True)
    assert d["inference_dtype"] == "float32"
    assert [(r["mode"], r["batch"], r["new_tokens"]) for r in d["rows"]] == [
        ("eager", 1, 4), ("eager", 1, 6), ("eager", 2, 4), ("eager", 2, 6)]
    assert all(r["ttft_ms"] > 0 and r["decode_tokens_per_s"] > 0 for r in d["rows"])
    assert [r["new_tokens"] for r in d["hf"]] == [4, 6]
    for r in d["hf"]:  # HF generate on the exported weights decodes the very same greedy tokens
        assert r["token_agreement"] == 1.0 and r["ratio"] == pytest.approx(r["ours_tokens_per_s"] / r["hf_tokens_per_s"])
        assert r["mode"] == "eager" and r["rounds"] == bench.TURNS == 5
    assert d["int8"]["new_tokens"] == 4 and d["int8"]["token_agreement"] >= 0.75  # (1.0 here; one flip allowed)
    table = format_table({"device": "cpu", "torch": "x", "dtype": "float32", "compile": False, "n_layer": 2,
                          "n_head": 2, "n_embd": 16, "block_size": 32, "batch_size": 1, "vocab_size": 40,
                          "params": 1, "ms_per_iter": 1.0, "tokens_per_s": 1.0, "achieved_tflops": 0.0,
                          "peak_tflops": 1.0, "mfu": 0.0, "best_matmul_tflops": 1.0, "mfu_of_best_matmul": 0.0,
                          "peak_memory_mib": 1.0, "decoding": d})
    assert "eager batch 2, 6 new" in table and "100% same greedy tokens" in table and "int8 4 new" in table


def test_hugging_face_is_left_out_for_layouts_it_cannot_load():
    d = decoding_figures(sharp_gpt(pos_encoding="rope"), lengths=(3,), batches=(1,), compile=False, int8=False)
    assert "hf" not in d and "int8" not in d and len(d["rows"]) == 1


def test_the_hugging_face_ratio_is_of_medians_over_turns_taken_in_alternation(monkeypatch):
    """HF and ours are timed in turn, three times each at each length; the ratio is of the medians
    (a slow turn of either, from the machine's drift, moves neither)."""
    calls = []
    hf_speeds, our_speeds = iter([100, 900, 300, 100, 500, 300]), iter([1, 2, 10, 70, 30, 20, 60, 50])

    def fake_engine_speed(engine, batch, n):
        calls.append("ours")
        return {"batch": batch, "new_tokens": n, "ttft_ms": 1.0, "prefill_tokens_per_s": 1.0,
                "decode_tokens_per_s": 1.0, "tokens_per_s": next(our_speeds), "tokens": torch.zeros(1, n)}

    def fake_hf_speed(twin, n):
        calls.append("hf")
        return {"tokens_per_s": next(hf_speeds), "tokens": torch.zeros(1, n)}

    monkeypatch.setattr(bench, "engine_speed", fake_engine_speed)
    monkeypatch.setattr(bench, "hf_generate_speed", fake_hf_speed)
    monkeypatch.setattr(bench, "hf_twin", lambda model: None)
    d = decoding_figures(sharp_gpt(), lengths=(4, 6), batches=(1,), compile=False, int8=False, hf_rounds=3)
    assert calls == ["ours", "ours"] + ["hf", "ours"] * 6  # the table's rows, then the turns
    assert [(r["hf_tokens_per_s"], r["ours_tokens_per_s"], r["ratio"]) for r in d["hf"]] == [
        (300, 30, 0.1), (300, 50, 50 / 300)]
