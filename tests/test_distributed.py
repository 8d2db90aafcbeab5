"""torchrun + DDP / FSDP on CPU (gloo): two processes with half the batch each train exactly like one
process with the whole batch, only rank 0 writes, and a run resumes from its checkpoint. FSDP
checkpoints are the single-process files: either kind of run resumes from the other's."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from helpers import word_corpus
from safetensors.torch import load_file

FLAGS = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--max-iters", "30",
         "--eval-interval", "15", "--eval-iters", "4", "--warmup-iters", "5", "--device", "cpu", "--seed", "7",
         "--dropout", "0", "--dtype", "float32"]  # float32: ranks and one process must agree to rounding


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("ddp") / "text.txt",
                       "now is the winter of our discontent made glorious summer by this sun of york", 600, 12)


def run(cmd, tmp_path):
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def torchrun(n):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
            "-m", "workbench"]


def roll_back_to_step_15(run_dir):
    """Make a finished 30-step run look as if it had been stopped after its step-15 checkpoint."""
    shutil.rmtree(run_dir / "model")
    shutil.rmtree(run_dir / "checkpoints" / "step-0000030")
    (run_dir / "checkpoints" / "latest").write_text("step-0000015")


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def max_diff(wa, wb):
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def one_process_vs_two_ranks(corpus, tmp_path, *rank_flags):
    """Train once in one process (batch 8) and once on 2 ranks (batch 4 each), both with two
    micro-batches per step (the ranks exchange gradients once, after the second); check that only
    rank 0 reported and that the loss curves agree. Returns the two run directories."""
    single, ranks = tmp_path / "single", tmp_path / "ranks"
    run([sys.executable, "-m", "workbench", "pretrain", "--corpus", str(corpus), "--out", str(single),
         "--batch-size", "8", "--grad-accum", "2", *FLAGS], tmp_path)
    proc = run([*torchrun(2), "pretrain", "--corpus", str(corpus), "--out", str(ranks), "--batch-size", "4",
                "--grad-accum", "2", *rank_flags, *FLAGS], tmp_path)
    assert proc.stdout.count("checkpoint:") == 1  # only rank 0 reports

    a, b = pd.read_csv(single / "history.csv"), pd.read_csv(ranks / "history.csv")
    la, lb = a["loss"].dropna().to_numpy(), b["loss"].dropna().to_numpy()
    assert len(la) == len(lb) == 30
    assert abs(la - lb).max() < 1e-4, f"loss curves differ: {abs(la - lb).max()}"
    assert abs(a["val_loss"].dropna().to_numpy() - b["val_loss"].dropna().to_numpy()).max() < 1e-4
    # rank 0 alone wrote the run: one set of step checkpoints
    assert sorted(p.name for p in (ranks / "checkpoints").glob("step-*")) == ["step-0000015", "step-0000030"]
    return single, ranks


@pytest.mark.slow
def test_two_ranks_match_one_process_on_the_same_global_batch(corpus, tmp_path):
    single, ddp = one_process_vs_two_ranks(corpus, tmp_path)
    assert max_diff(weights(single), weights(ddp)) < 1e-4


@pytest.mark.slow
def test_a_ddp_run_resumes_from_its_checkpoint(corpus, tmp_path):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    cmd = lambda out, *extra: [*torchrun(2), "pretrain", "--corpus", str(corpus), "--out", str(out),
                               "--batch-size", "4", *FLAGS, *extra]
    run(cmd(straight), tmp_path)
    run(cmd(cut), tmp_path)
    roll_back_to_step_15(cut)
    run(cmd(cut, "--resume"), tmp_path)
    wa, wb = load_file(str(straight / "model" / "model.safetensors")), load_file(str(cut / "model" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_ctrl_c_stops_both_ranks_at_one_step_and_the_run_resumes_exactly(corpus, tmp_path):
    """Ctrl-C reaches torchrun, which forwards SIGINT to every rank: the ranks agree on the step to stop
    at, rank 0 checkpoints it and names --resume, and resuming gives the uninterrupted run's weights."""
    from workbench import checkpoint as ckpt

    longer = ("--max-iters", "600", "--eval-interval", "200")
    cmd = lambda out, *extra: [*torchrun(2), "pretrain", "--corpus", str(corpus), "--out", str(out),
                               "--batch-size", "4", *FLAGS, *longer, *extra]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    run(cmd(straight), tmp_path)
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd(cut), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while ckpt.latest_checkpoint(cut) is None:  # training runs once the step-200 checkpoint is there
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends torchrun
    _, err = proc.communicate(timeout=120)
    continue_line = " --standalone --nproc_per_node=2 -m workbench pretrain --out"  # this environment's torchrun
    assert proc.returncode != 0 and err.count(continue_line) == 1, err[-3000:]  # rank 0 reports
    step = int(err.split("interrupted at step ")[1].split(" of ")[0])
    assert 200 <= step < 600 and not (cut / "model").exists()
    assert ckpt.load_checkpoint(cut).state["step"] == step
    run(cmd(cut, "--resume"), tmp_path)
    wa, wb = weights(straight), weights(cut)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ----------------------------------------------------------------------- FSDP
@pytest.mark.slow
def test_fsdp_ranks_match_one_process_and_write_single_process_checkpoints(corpus, tmp_path):
    from safetensors import safe_open

    from workbench.pretrain import load_pretrained

    single, fsdp = one_process_vs_two_ranks(corpus, tmp_path, "--parallel", "fsdp")

    # the same files as a single process writes: whole tensors, the tied weight stored once
    for name in ("model/model.safetensors", "checkpoints/step-0000030/model.safetensors",
                 "checkpoints/step-0000030/optimizer.safetensors"):
        with safe_open(str(single / name), "pt") as fa, safe_open(str(fsdp / name), "pt") as fb:
            assert fa.metadata() == fb.metadata()
            assert sorted(fa.keys()) == sorted(fb.keys())
            assert all(fa.get_slice(k).get_shape() == fb.get_slice(k).get_shape() for k in fa.keys())
    assert "transformer.wte.weight" not in weights(fsdp)  # stored once, as "lm_head.weight"

    # ... so one process loads the FSDP run, with the single-process run's weights and the tie intact
    model, _, config = load_pretrained(fsdp)
    assert config.train.parallel == "fsdp"
    assert model.lm_head.weight is model.transformer.wte.weight
    assert max_diff({k: v for k, v in model.state_dict().items() if k in weights(fsdp)}, weights(single)) < 1e-4

    # and an FSDP run resumes a single-process checkpoint
    shutil.copytree(single, tmp_path / "cut")
    roll_back_to_step_15(tmp_path / "cut")
    run([*torchrun(2), "pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "cut"), "--batch-size", "4",
         "--parallel", "fsdp", *FLAGS, "--resume"], tmp_path)
    assert max_diff(weights(tmp_path / "cut"), weights(single)) < 1e-4


@pytest.mark.slow
def test_an_fsdp_run_resumes_across_ranks_and_in_one_process(corpus, tmp_path):
    straight = tmp_path / "straight"
    cmd = lambda out, *extra: [*torchrun(2), "pretrain", "--corpus", str(corpus), "--out", str(out),
                               "--batch-size", "4", "--parallel", "fsdp", *FLAGS, *extra]
    run(cmd(straight), tmp_path)
    for name in ("fsdp", "single"):
        shutil.copytree(straight, tmp_path / name)
        roll_back_to_step_15(tmp_path / name)
    run(cmd(tmp_path / "fsdp", "--resume"), tmp_path)
    wa, wb = weights(straight), weights(tmp_path / "fsdp")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # sharded resume is exact
    run([sys.executable, "-m", "workbench", "pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "single"),
         "--batch-size", "8", *FLAGS, "--resume"], tmp_path)
    assert max_diff(weights(tmp_path / "single"), wa) < 1e-4


def test_fsdp_without_torchrun_trains_one_process_with_a_warning(corpus, tmp_path, caplog, monkeypatch):
    from workbench.config import RunConfig, TrainConfig
    from workbench.pretrain import pretrain

    with pytest.raises(ValueError, match="parallel='zero' is not one of ddp, fsdp"):
        TrainConfig(parallel="zero")
    config = RunConfig.from_dict({"data": {"corpus": str(corpus)},
                                  "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
                                  "train": {"max_iters": 2, "eval_interval": 2, "eval_iters": 1, "device": "cpu",
                                            "parallel": "fsdp"}})
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger="workbench.train"):
        result = pretrain(config, progress=False)
    assert result.metrics["final_step"] == 2
    warnings = [r.getMessage() for r in caplog.records if "fsdp" in r.getMessage()]
    assert len(warnings) == 1 and "torchrun --nproc_per_node" in warnings[0] and "\n" not in warnings[0]


CALLBACKS_SCRIPT = """
import sys
from workbench import data, pretrain as pt, tokenizer as tk
from workbench.config import preset
from workbench.distributed import init_distributed, shutdown
info = init_distributed("cpu")  # a script's entry point joins the ranks, as `python -m workbench` does
corpus, out = sys.argv[1:3]
config = preset("smoke", data={"corpus": corpus}, train={"parallel": "fsdp", "max_iters": 10, "eval_interval": 5,
                                                        "device": "cpu"})
tok = tk.train_tokenizer("char", data.load_corpus(corpus).train_text)
samples, snapshots = pt.TextSamples(tok, prompt="now", max_new_tokens=8), pt.AttentionSnapshots(tok, "now is the")
pt.pretrain(config, out, tokenizer=tok, callbacks=[samples, snapshots], progress=False)
print("samples", len(samples.samples), "snapshots", len(snapshots.snapshots), repr(samples.samples[-1]["text"]))
shutdown(info)
"""


@pytest.mark.slow
def test_notebook_callbacks_sample_and_capture_attention_under_fsdp(corpus, tmp_path):
    script = tmp_path / "callbacks.py"
    script.write_text(CALLBACKS_SCRIPT)
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                str(corpus), str(tmp_path / "run")], tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("samples")]
    assert len(lines) == 2 and lines[0] == lines[1]  # both ranks sampled the same text from the gathered model
    assert lines[0].startswith("samples 3 snapshots")


def test_library_code_under_torchrun_without_a_process_group_names_the_fix(monkeypatch, tmp_path):
    """pretrain/finetune do not join ranks themselves (the entry point does): each rank would otherwise
    train alone and write the same files."""
    from workbench.run import Run

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"no process group was joined; call workbench.distributed.init_distributed"):
        Run(tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["finetune", "seq2seq-train"])
def test_commands_that_train_in_one_process_refuse_torchrun(monkeypatch, tmp_path, command):
    """finetune and seq2seq-train draw whole batches on every rank (the same ones): under torchrun they say
    so in one line, on the command line and in the library, and take no --parallel flag."""
    from helpers import cli

    from workbench.distributed import DistInfo
    from workbench.run import Run

    code, _, err = cli(command, "--parallel", "ddp", "--out", tmp_path / "run")
    assert code == 2 and "unrecognized arguments: --parallel ddp" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = cli(command, "--out", tmp_path / "run")
    assert code == 2 and err == (f"error: {command} trains in one process (every rank would draw the same batches); "
                                 "run it without torchrun: pretrain is the command that trains across ranks\n")
    monkeypatch.setattr("workbench.run.dist_info", lambda: DistInfo(0, 2, 0))  # a process group joined by hand
    with pytest.raises(ValueError, match=f"{command} trains in one process"):
        Run(tmp_path / "run", kind=command)
    assert not (tmp_path / "run").exists()
