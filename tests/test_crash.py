"""Crash safety: training killed with SIGKILL at random moments (checkpoint writes included) always
leaves a loadable latest checkpoint, and resuming reaches the same final weights as a run that
was never interrupted."""

import os
import random
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

KILLS = 10
# Checkpoint at every step, so a good share of the kills land inside a checkpoint write.
FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
         "--max-iters", "150", "--eval-interval", "1", "--eval-iters", "1", "--warmup-iters", "5",
         "--device", "cpu", "--seed", "3"]


def pretrain_cmd(corpus: Path, out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "workbench", "pretrain", "--corpus", str(corpus), "--out", str(out), *FLAGS,
            *(["--resume"] if resume else [])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("crash") / "text.txt",
                       "to be or not that is the question whether tis nobler in mind suffer slings arrows", 400, 10)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_run(corpus, tmp_path):
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "workbench", "--help"], check=True, env=env, capture_output=True)
    startup = time.perf_counter() - t0  # imports: killing before training starts proves little
    straight = tmp_path / "straight"
    t0 = time.perf_counter()
    subprocess.run(pretrain_cmd(corpus, straight, False), check=True, env=env, capture_output=True)
    whole = time.perf_counter() - t0

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

    a = load_file(str(straight / "model" / ckpt.MODEL_FILE))
    b = load_file(str(killed / "model" / ckpt.MODEL_FILE))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "the killed-and-resumed run ended with different weights"
