"""torchrun + DDP on CPU (gloo): two processes with half the batch each train exactly like one
process with the whole batch, only rank 0 writes, and a DDP run resumes from its checkpoint."""

import os
import random
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

FLAGS = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--max-iters", "30",
         "--eval-interval", "15", "--eval-iters", "4", "--warmup-iters", "5", "--device", "cpu", "--seed", "7",
         "--dropout", "0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "text.txt"
    rng = random.Random(0)
    words = "now is the winter of our discontent made glorious summer by this sun of york".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(600)))
    return path


def run(cmd, tmp_path):
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def torchrun(n):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
            "-m", "workbench"]


@pytest.mark.slow
def test_two_ranks_match_one_process_on_the_same_global_batch(corpus, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run([sys.executable, "-m", "workbench", "pretrain", "--corpus", str(corpus), "--out", str(single),
         "--batch-size", "8", *FLAGS], tmp_path)
    proc = run([*torchrun(2), "pretrain", "--corpus", str(corpus), "--out", str(ddp), "--batch-size", "4", *FLAGS],
               tmp_path)
    assert proc.stdout.count("checkpoint:") == 1  # only rank 0 reports

    a, b = pd.read_csv(single / "history.csv"), pd.read_csv(ddp / "history.csv")
    la, lb = a["loss"].dropna().to_numpy(), b["loss"].dropna().to_numpy()
    assert len(la) == len(lb) == 30
    assert abs(la - lb).max() < 1e-4, f"loss curves differ: {abs(la - lb).max()}"
    assert abs(a["val_loss"].dropna().to_numpy() - b["val_loss"].dropna().to_numpy()).max() < 1e-4
    wa, wb = load_file(str(single / "model" / "model.safetensors")), load_file(str(ddp / "model" / "model.safetensors"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
    # rank 0 alone wrote the run: one set of step checkpoints
    assert sorted(p.name for p in (ddp / "checkpoints").glob("step-*")) == ["step-0000015", "step-0000030"]


@pytest.mark.slow
def test_a_ddp_run_resumes_from_its_checkpoint(corpus, tmp_path):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    cmd = lambda out, *extra: [*torchrun(2), "pretrain", "--corpus", str(corpus), "--out", str(out),
                               "--batch-size", "4", *FLAGS, *extra]
    run(cmd(straight), tmp_path)
    run(cmd(cut), tmp_path)
    # roll the second run back to its step-15 checkpoint, as if it had been stopped there
    import shutil
    shutil.rmtree(cut / "model")
    shutil.rmtree(cut / "checkpoints" / "step-0000030")
    (cut / "checkpoints" / "latest").write_text("step-0000015")
    run(cmd(cut, "--resume"), tmp_path)
    wa, wb = load_file(str(straight / "model" / "model.safetensors")), load_file(str(cut / "model" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
