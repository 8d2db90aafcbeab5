"""Crash safety: training killed with SIGKILL at random moments (checkpoint writes included) always
leaves a loadable latest checkpoint, Ctrl-C (SIGINT) checkpoints the step it stopped at, and
resuming reaches the same final weights as a run that was never interrupted."""

import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import word_corpus
from safetensors.torch import load_file

from workbench import checkpoint as ckpt
from workbench.run import _shown_path

KILLS = 10
# Checkpoint at every step, so a good share of the kills land inside a checkpoint write.
FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
         "--max-iters", "150", "--eval-interval", "1", "--eval-iters", "1", "--warmup-iters", "5",
         "--device", "cpu", "--seed", "3"]


def pretrain_cmd(corpus: Path, out: Path, resume: bool, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workbench", "pretrain", "--corpus", str(corpus), "--out", str(out), *FLAGS,
            *extra, *(["--resume"] if resume else [])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("crash") / "text.txt",
                       "to be or not that is the question whether tis nobler in mind suffer slings arrows", 400, 10)


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):
    """The uninterrupted run, the seconds the command needs to start, and its whole wall time."""
    root = tmp_path_factory.mktemp("straight")
    # every run of the module in one dtype: on a CPU "auto" is a timing that each process would take
    # anew, and near its threshold the straight run and an interrupted one could start in different dtypes
    from workbench.train import cpu_dtype_environ

    env = {**os.environ, "WORKBENCH_CACHE": str(root / "cache"), **cpu_dtype_environ()}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "workbench", "--help"], check=True, env=env, capture_output=True)
    startup = time.perf_counter() - t0  # imports: killing before training starts proves little
    t0 = time.perf_counter()
    subprocess.run(pretrain_cmd(corpus, root / "run", False), check=True, env=env, capture_output=True)
    return root / "run", env, startup, time.perf_counter() - t0


def same_final_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model" / ckpt.MODEL_FILE)), load_file(str(b / "model" / ckpt.MODEL_FILE))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_run(corpus, straight, tmp_path):
    straight, env, startup, whole = straight
    killed = tmp_path / "killed"
    rng = random.Random(1234)
    kills, steps_seen = 0, []
    while kills < KILLS or not (killed / "model" / ckpt.MODEL_FILE).exists():
        if (killed / "model").exists():  # finished before the next kill: start over, keep counting
            shutil.rmtree(killed)
        resume = ckpt.latest_checkpoint(killed) is not None
        if not resume and killed.exists():  # killed before its first checkpoint: start again
            shutil.rmtree(killed)
        proc = subprocess.Popen(pretrain_cmd(corpus, killed, resume), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < KILLS:  # a random moment of the training (checkpoint writes included)
            time.sleep(rng.uniform(startup, 0.9 * whole))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        _, err = proc.communicate(timeout=300)
        if proc.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"run failed after a kill: {err.decode()[-2000:]}")
        latest = ckpt.latest_checkpoint(killed)
        if latest is not None:  # whatever the moment of the kill, the latest checkpoint loads
            c = ckpt.load_checkpoint(killed)
            assert c.state["step"] == int(latest.name.split("-")[1])
            assert load_file(str(latest / ckpt.MODEL_FILE))
            steps_seen.append(c.state["step"])
    assert kills == KILLS
    assert len(set(steps_seen)) >= 3, f"kills should land at many different steps, saw {steps_seen}"

    assert same_final_weights(straight, killed), "the killed-and-resumed run ended with different weights"


@pytest.mark.slow
def test_ctrl_c_checkpoints_the_step_it_stopped_at_and_resume_finishes_the_run(corpus, straight, tmp_path):
    """SIGINT, as Ctrl-C sends it, at random moments of training: exit status 130 and a one-line hint,
    the latest checkpoint is the step training stopped at, nothing final is written; resuming after
    three interruptions ends with the uninterrupted run's weights."""
    _, env, startup, _ = straight
    sparse = ("--max-iters", "2000", "--eval-interval", "500")  # checkpoints at 500, 1000, ...: the others are Ctrl-C's
    straight = tmp_path / "straight"
    t0 = time.perf_counter()
    subprocess.run(pretrain_cmd(corpus, straight, False, *sparse), check=True, env=env, capture_output=True)
    per_step = (time.perf_counter() - t0 - startup) / 2000
    run = tmp_path / "interrupted"
    rng = random.Random(7)
    stopped_at = []
    for attempt in range(4):
        proc = subprocess.Popen(pretrain_cmd(corpus, run, attempt > 0, *sparse), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        if attempt < 3:
            before = ckpt.latest_checkpoint(run) if run.exists() else None
            deadline = time.monotonic() + 120
            while (ckpt.latest_checkpoint(run) if run.exists() else None) == before:  # training has started
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 300 * per_step))  # up to ~300 steps after that checkpoint
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        if attempt == 3:
            assert proc.returncode == 0, err[-2000:]
            break
        assert proc.returncode == 130, err[-2000:]
        stopped = [line for line in err.splitlines() if "interrupted at step " in line]
        assert len(stopped) == 1 and stopped[0].endswith(f"; to continue: {_shown_path(sys.executable)} "
                                                         f"-m workbench pretrain --out {shlex.quote(str(run))} --resume"), \
            err[-2000:]  # one line
        step = int(stopped[0].split("interrupted at step ")[1].split(" of ")[0])
        assert not (run / "model").exists() and not (run / "metrics.json").exists()
        latest = ckpt.load_checkpoint(run)
        assert latest.state["step"] == step and latest.history[-1]["step"] == step
        stopped_at.append(step)
    assert stopped_at == sorted(stopped_at) and len(set(stopped_at)) == 3, stopped_at
    assert any(step % 500 for step in stopped_at), f"no interruption between evaluations: {stopped_at}"
    assert same_final_weights(straight, run), "the interrupted-and-resumed run ended with different weights"
