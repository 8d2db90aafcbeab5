"""Trainer: schedule, exact resume, early stopping with best-weights restore, callbacks,
non-finite loss handling, and atomic checkpoints that never unpickle."""

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FakeClock, fake_cuda_graphs

from workbench import checkpoint as ckpt
from workbench.config import ModelConfig, TrainConfig
from workbench.data import get_batch
from workbench.model import GPT
from workbench.evaluate import lm_evaluator
from workbench import train as train_module
from workbench.distributed import DistInfo
from workbench.train import (NonFiniteLossError, Trainer, cpu_bf16_speedup, graph_problem, lr_at, make_optimizer,
                             uses_bf16)

BLOCK = 16
DATA = np.random.default_rng(0).integers(0, 32, size=4000).astype(np.uint16)
DATA[::3] = 5  # some structure so the loss can fall


def make_trainer(run_dir=None, dropout=0.1, next_batch=None, evaluate=None, bias=True, **train_kw) -> Trainer:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=32, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16, dropout=dropout,
                            bias=bias))
    cfg = TrainConfig(**{"batch_size": 4, "max_iters": 12, "warmup_iters": 2, "eval_interval": 4,
                         "eval_iters": 2, "lr": 3e-3, "min_lr": 3e-4, "device": "cpu", **train_kw})

    def batch(generator):
        return get_batch(DATA, BLOCK, cfg.batch_size, generator)

    evaluate = evaluate or lm_evaluator(DATA[-800:], BLOCK, 8, cfg.eval_iters, "cpu")
    return Trainer(model, cfg, next_batch or batch, evaluate, run_dir=run_dir, artifacts={"config": {"x": 1}},
                   progress=False)


def weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


PROGRESS_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_train import make_trainer
trainer = make_trainer(max_iters=3, eval_interval=3)
trainer.progress = True
trainer.fit()
"""


@pytest.mark.parametrize("env, shown", [({}, True), ({"TQDM_DISABLE": "1"}, False)], ids=["default", "TQDM_DISABLE"])
def test_the_progress_bar_shows_unless_tqdm_disable_is_set(env, shown):
    # tqdm reads TQDM_* when it is imported, hence a fresh process
    script = PROGRESS_SCRIPT.format(tests=str(Path(__file__).parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")} | env
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("train: 100%" in result.stderr) is shown


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    lrs = [lr_at(s, cfg) for s in range(130)]
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)  # halfway through the cosine
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111]))
    assert lrs[110] == lrs[129] == 0.1


def test_weight_decay_only_on_matrices():
    model = GPT(ModelConfig(vocab_size=32, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16))
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()


def test_training_lowers_the_loss_and_history_is_a_dataframe():
    trainer = make_trainer(max_iters=40, eval_interval=20)
    history = trainer.fit()
    df = history.df
    assert {"step", "loss", "lr", "tokens_per_s", "val_loss"} <= set(df.columns)
    evals = history.evals()
    assert list(evals["step"]) == [20, 40]
    assert df["loss"].dropna().iloc[-5:].mean() < df["loss"].dropna().iloc[:5].mean()


def test_steps_between_logging_steps_share_their_window_time(monkeypatch):
    """Only logging steps synchronise the device, so a slow step's time is spread over its window;
    the time an evaluation takes is charged to no step. A fake clock makes every figure exact."""
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    calls = []

    def batch_taking_10ms(generator):  # the third one takes 200 ms more
        calls.append(1)
        clock.now += 0.010 + (0.2 if len(calls) == 3 else 0.0)
        return get_batch(DATA, BLOCK, 4, generator)

    lm_eval = lm_evaluator(DATA[-800:], BLOCK, 8, 2, "cpu")

    def evaluation_taking_1s(model):
        clock.now += 1.0
        return lm_eval(model)

    trainer = make_trainer(next_batch=batch_taking_10ms, evaluate=evaluation_taking_1s, log_interval=5,
                           eval_interval=4)
    trainer.fit()
    logged = [r for r in trainer.history.records if "loss" in r]
    assert [r["step"] for r in logged] == [4, 5, 8, 10, 12]  # every log_interval, every evaluation and the last step
    # steps 1-4 share 4 x 10 ms + 200 ms; the evaluations after steps 4, 8 and 12 count for no step
    assert trainer.step_times == pytest.approx([0.06] * 4 + [0.01] * 8)
    assert [r["ms_per_iter"] for r in logged] == pytest.approx([60, 10, 10, 10, 10])
    assert [r["tokens_per_s"] for r in logged] == pytest.approx([4 * BLOCK / 0.06] + [4 * BLOCK / 0.01] * 4)
    # the summary leaves out the first 10% of the steps (warm-up) and takes the median
    assert trainer.summary() == pytest.approx({"ms_per_iter_median": 10, "tokens_per_s": 4 * BLOCK / 0.01,
                                               "train_s": 0.32})


@pytest.mark.parametrize("speedup,auto", [(1.0, False), (1.9, False), (2.0, True), (4.0, True)])
def test_auto_dtype_is_bf16_on_cuda_and_on_cpus_whose_bf16_matmuls_pay(monkeypatch, speedup, auto):
    monkeypatch.setattr(train_module, "cpu_bf16_speedup", lambda: speedup)
    monkeypatch.delenv("WORKBENCH_CPU_BF16", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert uses_bf16(cpu, "auto") == auto and uses_bf16(cuda, "auto")
    assert uses_bf16(cpu, "bfloat16") and not uses_bf16(cpu, "float32") and not uses_bf16(cuda, "float32")
    trainer = make_trainer(max_iters=2, eval_interval=2)
    assert trainer.compute_dtype == ("bfloat16" if auto else "float32")
    assert make_trainer(max_iters=2, eval_interval=2, dtype="float32").compute_dtype == "float32"


@pytest.mark.parametrize("given,speedup,auto", [("1", 1.0, True), ("0", 4.0, False), ("", 4.0, True), ("yes", 1.0, False)])
def test_the_environment_can_decide_auto_on_a_cpu_instead_of_the_timing(monkeypatch, given, speedup, auto):
    """WORKBENCH_CPU_BF16=1/0 (what the report runner hands its notebooks) wins over the timing; any
    other value leaves the timing to decide. CUDA's "auto" is bf16 either way."""
    monkeypatch.setattr(train_module, "cpu_bf16_speedup", lambda: speedup)
    monkeypatch.setenv("WORKBENCH_CPU_BF16", given)
    assert uses_bf16(torch.device("cpu"), "auto") == auto and uses_bf16(torch.device("cuda"), "auto")


def test_the_cpu_bf16_measurement_is_a_positive_ratio_taken_once():
    ratio = cpu_bf16_speedup()
    assert math.isfinite(ratio) and ratio > 0 and cpu_bf16_speedup() is ratio  # cached: one measurement a process


def test_the_cpu_bf16_measurement_leaves_torchs_random_numbers_alone():
    """It runs inside the first run of a process that asks for "auto": drawing from the global
    generator there made that run differ from the same seeded run after it (a resume was not exact)."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    cpu_bf16_speedup.cache_clear()  # measure now, between the seed and the draw
    torch.manual_seed(0)
    assert cpu_bf16_speedup() > 0 and torch.equal(torch.rand(3), expected)


def test_bf16_training_on_a_cpu_follows_fp32_training():
    """bf16 autocast keeps fp32 weights and optimizer: the same run lowers the loss as fp32 does."""
    runs = {dtype: make_trainer(dropout=0.0, max_iters=30, eval_interval=30, dtype=dtype)
            for dtype in ("float32", "bfloat16")}
    losses = {dtype: [r["loss"] for r in t.fit().records if "loss" in r] for dtype, t in runs.items()}
    assert all(p.dtype == torch.float32 for p in runs["bfloat16"].model.parameters())
    assert losses["bfloat16"][-1] < losses["bfloat16"][0] - 0.3
    assert losses["bfloat16"] != losses["float32"]  # bf16 matmuls really ran
    assert losses["bfloat16"] == pytest.approx(losses["float32"], abs=2e-3)  # the same trajectory, to rounding


def test_compiled_training_matches_eager():
    eager = make_trainer(dropout=0.0, max_iters=6, eval_interval=6, dtype="float32")
    compiled = make_trainer(dropout=0.0, max_iters=6, eval_interval=6, compile=True, dtype="float32")
    assert type(compiled.parallel.forward).__name__ == "OptimizedModule"  # torch.compile's wrapper
    losses = [[r["loss"] for r in t.fit().records if "loss" in r] for t in (eager, compiled)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    for k, v in weights(eager).items():
        torch.testing.assert_close(weights(compiled)[k], v, rtol=1e-3, atol=1e-5)


def test_k_micro_batches_equal_one_batch_k_times_larger():
    """grad_accum=4 with batch 2 takes the same steps as grad_accum=1 with batch 8 when the four
    micro-batches, concatenated, are the big batch (dropout 0, float32)."""
    k, B, steps = 4, 2, 4
    g = torch.Generator().manual_seed(42)
    big_batches = [get_batch(DATA, BLOCK, k * B, g) for _ in range(steps)]
    drawn = []

    def one_big_batch(generator):
        drawn.append("big")
        return big_batches[len(drawn) - 1]

    def next_quarter(generator):
        i = len(drawn)
        drawn.append("micro")
        x, y = big_batches[i // k]
        return x[i % k * B:(i % k + 1) * B], y[i % k * B:(i % k + 1) * B]

    kw = dict(dropout=0.0, max_iters=steps, eval_interval=steps, dtype="float32")
    big = make_trainer(next_batch=one_big_batch, batch_size=k * B, grad_accum=1, **kw)
    big.fit()
    drawn.clear()
    accumulated = make_trainer(next_batch=next_quarter, batch_size=B, grad_accum=k, **kw)
    accumulated.fit()
    assert len(drawn) == k * steps
    # the gradient itself (its norm is logged before clipping): the micro-batch losses are averaged, not summed
    norms = [[r["grad_norm"] for r in t.history.records if "grad_norm" in r] for t in (big, accumulated)]
    assert len(norms[0]) == steps and norms[1] == pytest.approx(norms[0], rel=1e-5)
    # the logged loss is the step's: the mean over its micro-batches, as the big batch's mean
    losses = [[r["loss"] for r in t.history.records if "loss" in r] for t in (big, accumulated)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    start, a, b = weights(make_trainer(dropout=0.0)), weights(big), weights(accumulated)
    for key, v in a.items():
        torch.testing.assert_close(b[key], v, rtol=0, atol=1e-6)
        assert key.endswith("bias") or not torch.equal(v, start[key]), f"{key} did not train"


@pytest.fixture(scope="module")
def straight_weights(tmp_path_factory):
    """The weights after 12 uninterrupted steps (checkpoints every 4)."""
    trainer = make_trainer(tmp_path_factory.mktemp("straight"), max_iters=12, checkpoint_interval=4)
    trainer.fit()
    return weights(trainer), trainer.history.df["loss"].dropna().tolist()


class StopAt:
    """Ask the trainer to stop after `step` steps (what Ctrl-C does through workbench.run.stop_on_sigint)."""

    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, record):
        if trainer.step == self.step:
            trainer.request_stop()


@pytest.mark.parametrize("stop", ["pause", "request_stop"])
def test_k_steps_resume_and_the_rest_equal_all_steps(tmp_path, straight_weights, stop):
    """Paused with fit(until=4) at a checkpoint step, or stopped by request_stop() after step 6, which
    is not one: resuming from the checkpoint gives bit-identical weights and losses. (The SIGINT
    plumbing around request_stop is tests/test_run.py's.)"""
    first = make_trainer(tmp_path, max_iters=12, checkpoint_interval=4)
    if stop == "pause":
        first.fit(until=4)
        k = 4
    else:
        first.callbacks.append(StopAt(6))
        history = first.fit()
        k = 6
        assert history.records[-1]["step"] == 6
    assert first.step == k and not first.finished
    assert ckpt.latest_checkpoint(tmp_path).name == f"step-{k:07d}"

    resumed = make_trainer(tmp_path, max_iters=12, checkpoint_interval=4)
    assert resumed.resume() and resumed.step == k
    resumed.fit()
    assert resumed.finished
    straight, losses = straight_weights
    b = weights(resumed)
    assert straight.keys() == b.keys()
    for key, v in straight.items():
        assert torch.equal(b[key], v), f"{key}: the resumed run drifted from the straight run"
    assert resumed.history.df["loss"].dropna().tolist() == losses


def test_a_resumed_auto_run_trains_in_the_dtype_it_began_in(tmp_path, monkeypatch):
    """On a CPU "auto" is a timing, taken anew by the process that resumes: a run begun in bf16
    carries on in bf16 even where the new process would have chosen fp32, and vice versa; a dtype
    given explicitly is obeyed."""
    monkeypatch.delenv("WORKBENCH_CPU_BF16", raising=False)
    monkeypatch.setattr(train_module, "cpu_bf16_speedup", lambda: 3.0)
    first = make_trainer(tmp_path, max_iters=8, checkpoint_interval=4)
    assert first.compute_dtype == "bfloat16"
    first.fit(until=4)
    monkeypatch.setattr(train_module, "cpu_bf16_speedup", lambda: 1.0)
    resumed = make_trainer(tmp_path, max_iters=8, checkpoint_interval=4)
    assert resumed.compute_dtype == "float32" and resumed.resume() and resumed.compute_dtype == "bfloat16"
    explicit = make_trainer(tmp_path, max_iters=8, checkpoint_interval=4, dtype="float32")
    assert explicit.resume() and explicit.compute_dtype == "float32"


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.safetensors"])
def test_resume_skips_a_damaged_step_checkpoint_and_still_equals_all_steps(tmp_path, straight_weights, damaged):
    """Step 8's file truncated (a disk filled mid-copy): resume warns, continues from step 4, and the
    finished run has exactly the straight run's weights. The damaged files are not touched by the resume."""
    first = make_trainer(tmp_path, max_iters=12, checkpoint_interval=4)
    first.fit(until=8)
    step_8 = tmp_path / "checkpoints" / "step-0000008"
    assert [p.name for p in ckpt.step_checkpoints(tmp_path)] == ["step-0000008", "step-0000004"]
    data = (step_8 / damaged).read_bytes()
    (step_8 / damaged).write_bytes(data[: len(data) // 2])

    resumed = make_trainer(tmp_path, max_iters=12, checkpoint_interval=4)
    with pytest.warns(UserWarning, match=f"skipping the damaged step checkpoint {step_8}: {damaged} is damaged"):
        assert resumed.resume()
    assert resumed.step == 4
    assert (step_8 / damaged).read_bytes() == data[: len(data) // 2]  # nothing already written is lost
    resumed.fit()  # (its own step-8 checkpoint replaces the damaged one)
    straight, losses = straight_weights
    b = weights(resumed)
    for key, v in straight.items():
        assert torch.equal(b[key], v), f"{key}: the run resumed from step 4 drifted from the straight run"
    assert resumed.history.df["loss"].dropna().tolist() == losses


def test_resume_of_a_damaged_checkpoint_named_explicitly_is_one_line(tmp_path):
    make_trainer(tmp_path, max_iters=4, checkpoint_interval=4).fit()
    step_4 = ckpt.latest_checkpoint(tmp_path)
    (step_4 / "state.json").write_text('{"step": 4, "be')
    with pytest.raises(ckpt.DamagedCheckpointError, match=f"checkpoint file {step_4 / 'state.json'} is damaged"):
        make_trainer(tmp_path).resume(step_4)


def test_early_stopping_restores_the_best_weights(tmp_path):
    scripted = iter([3.0, 2.0, 2.5, 2.6, 1.0, 0.5])  # best at the 2nd evaluation, then worse twice
    snapshots = {}

    class Spy:
        def on_eval(self, trainer, record):
            snapshots[trainer.step] = weights(trainer)

    trainer = make_trainer(tmp_path, max_iters=40, eval_interval=2, patience=2)
    trainer.evaluate_fn = lambda model: {"val_loss": next(scripted)}
    trainer.callbacks.append(Spy())
    trainer.fit()
    assert trainer.best_step == 4 and trainer.step == 8  # stopped after two evaluations without gain
    assert trainer.best == 2.0
    final = weights(trainer)
    assert all(torch.equal(final[k], snapshots[4][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[8][k]) for k in final)


def test_callbacks_see_every_step_eval_and_checkpoint(tmp_path):
    calls = {"step": 0, "eval": 0, "ckpt": []}

    class Counter:
        def on_step(self, trainer, record):
            calls["step"] += 1

        def on_eval(self, trainer, record):
            calls["eval"] += 1

        def on_checkpoint(self, trainer, path):
            calls["ckpt"].append(path.name)

    trainer = make_trainer(tmp_path)
    trainer.callbacks.append(Counter())
    trainer.fit()
    assert calls["step"] == 12 and calls["eval"] == 3
    assert calls["ckpt"] == ["step-0000004", "step-0000008", "step-0000012"]
    # only the newest two step checkpoints are kept
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert kept == ["step-0000008", "step-0000012"]


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=12)

    class Poison:
        def on_checkpoint(self, trainer, path):  # corrupt the weights right after the step-4 save
            with torch.no_grad():
                trainer.model.transformer.wte.weight.fill_(float("nan"))

    trainer.callbacks.append(Poison())
    with pytest.raises(NonFiniteLossError, match="lower --lr"):
        trainer.fit()
    # the checkpoint written at step 4 (before poisoning took effect) is intact and finite
    c = ckpt.load_checkpoint(tmp_path)
    assert c.state["step"] == 4
    restored = make_trainer()
    c.load_weights(restored.model)
    assert all(torch.isfinite(v).all() for v in restored.model.state_dict().values())


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path):
    make_trainer(tmp_path).fit()
    path = ckpt.latest_checkpoint(tmp_path)
    names = sorted(p.name for p in path.iterdir())
    assert names == ["best.safetensors", "config.json", "history.json", "model.safetensors", "optimizer.safetensors",
                     "state.json"]
    state = json.loads((path / "state.json").read_text())
    assert state["step"] == 12 and math.isfinite(state["best"])
    assert not list(tmp_path.rglob(".*tmp*")), "temporary files left behind"


def test_save_checkpoint_replaces_atomically(tmp_path):
    model = torch.nn.Linear(3, 3)
    target = tmp_path / "c"
    ckpt.save_checkpoint(target, model, {"meta": {"v": 1}})
    with torch.no_grad():
        model.weight.zero_()
    ckpt.save_checkpoint(target, model, {"meta": {"v": 2}})
    c = ckpt.load_checkpoint(target)
    assert c.artifacts["meta"] == {"v": 2}
    fresh = torch.nn.Linear(3, 3)
    c.load_weights(fresh)
    assert fresh.weight.abs().sum() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain --out"):
        ckpt.load_checkpoint(tmp_path / "nope")


def test_a_cuda_graph_step_needs_one_cuda_process():
    """What `graph_problem` refuses, each with the fix; the step itself is tests/test_cuda.py's."""
    cuda, one = torch.device("cuda"), DistInfo()
    assert graph_problem(cuda, one) is None
    assert "needs a CUDA GPU, not cpu; drop --cuda-graph" in graph_problem(torch.device("cpu"), one)
    assert "not under torchrun; drop --cuda-graph" in graph_problem(cuda, DistInfo(world_size=2))
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        make_trainer(cuda_graph=True)


def test_a_checkpoint_holds_a_tensor_learning_rate_as_a_number_and_resumes_in_the_trainers_own_mode(tmp_path):
    """A StepGraph's learning rate is a tensor and its AdamW capturable: state.json gets the number
    (`checkpoint.json_safe`), and a run resumed from its checkpoint steps as its own config says (here
    eagerly, not capturable)."""
    first = make_trainer(tmp_path, max_iters=4, eval_interval=4)
    first.fit(until=2)
    for group in first.optimizer.param_groups:
        group["lr"], group["capturable"] = torch.tensor(0.25), True
    first.save()
    saved = json.loads((ckpt.latest_checkpoint(tmp_path) / "state.json").read_text())
    assert [g["lr"] for g in saved["param_groups"]] == [0.25, 0.25]
    resumed = make_trainer(tmp_path, max_iters=4, eval_interval=4)
    assert resumed.resume() and resumed.step == 2
    assert [g["capturable"] for g in resumed.optimizer.param_groups] == [False, False]
    resumed.fit()
    assert resumed.finished and math.isfinite(resumed.history.records[-1]["val_loss"])


@pytest.fixture
def cpu_graphs(monkeypatch):
    """`make_trainer` with cuda_graph on a CPU, through `helpers.fake_cuda_graphs`."""
    fake_cuda_graphs(monkeypatch)
    return lambda *args, **kw: make_trainer(*args, cuda_graph=True, **kw)


def test_a_step_graph_takes_the_eager_steps_on_a_cpu(cpu_graphs):
    kw = dict(dropout=0.0, bias=False, dtype="float32", max_iters=12, eval_interval=6)
    eager, graphed = make_trainer(**kw), cpu_graphs(**kw)
    eager.fit(), graphed.fit()
    assert (graphed.step_graph.eager_steps, graphed.step_graph.replays) == (3, 9)
    assert all(torch.is_tensor(g["lr"]) for g in graphed.optimizer.param_groups)
    for key in ("loss", "grad_norm"):
        want, got = ([r[key] for r in t.history.records if key in r] for t in (eager, graphed))
        assert len(want) == 12 and got == pytest.approx(want, rel=1e-6), key
    for key, v in weights(eager).items():
        torch.testing.assert_close(weights(graphed)[key], v, rtol=1e-5, atol=1e-6)


def test_a_resumed_step_graph_records_the_step_anew_and_ends_on_the_straight_weights(tmp_path, cpu_graphs):
    kw = dict(dropout=0.0, bias=False, max_iters=12, eval_interval=6)
    straight = cpu_graphs(tmp_path / "straight", **kw)
    straight.fit()
    cpu_graphs(tmp_path / "paused", **kw).fit(until=6)
    resumed = cpu_graphs(tmp_path / "paused", **kw)
    assert resumed.resume() and resumed.step == 6
    resumed.fit()
    assert (straight.step_graph.replays, resumed.step_graph.replays) == (9, 3)
    for key, v in weights(straight).items():
        assert torch.equal(weights(resumed)[key], v), key


def test_a_step_graph_refuses_a_batch_of_another_shape_after_capture(cpu_graphs):
    sizes = iter([4] * 4 + [2] * 8)
    t = cpu_graphs(dropout=0.0, next_batch=lambda g: get_batch(DATA, BLOCK, next(sizes), g))
    with pytest.raises(ValueError, match=rf"got \(2, {BLOCK}\) after \(4, {BLOCK}\): drop --cuda-graph"):
        t.fit()
    assert t.step == 4
