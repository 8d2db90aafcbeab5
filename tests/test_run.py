"""The run lifecycle every training command shares: out-dir checks, the saved-config comparison,
resume="auto", Ctrl-C as a clean stop, and the final files."""

import json
import logging
import os
import re
import signal
import sys

import numpy as np
import pytest
import torch

from workbench import checkpoint as ckpt
from workbench.config import ModelConfig, TrainConfig
from workbench.data import get_batch
from workbench.model import GPT
from workbench.distributed import DistInfo
from workbench.run import COMMAND_LINE, Run, how_to_continue, stop_on_sigint
from workbench.train import Trainer

DATA = np.random.default_rng(0).integers(0, 32, size=3000).astype(np.uint16)


def trainer(run: Run, max_iters=8, patience=None) -> Trainer:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=16))
    cfg = TrainConfig(batch_size=4, max_iters=max_iters, warmup_iters=1, eval_interval=4, device="cpu",
                      patience=patience)
    return Trainer(model, cfg, lambda g: get_batch(DATA, 16, 4, g), lambda m: {"val_loss": 1.0 / (1 + m.training)},
                   run_dir=run.out, artifacts={"config": {"data": {"corpus": "a"}, "model": {"n_layer": 1}}},
                   progress=False)


class SigintAt:
    """Send this process SIGINT (what Ctrl-C and a notebook's interrupt send) after `step` steps."""

    def __init__(self, step, times=1):
        self.step, self.times = step, times

    def on_step(self, trainer, record):
        if trainer.step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


def test_a_run_writes_model_history_and_metrics(tmp_path):
    run = Run(tmp_path / "r")
    t = trainer(run)
    assert run.fit(t)
    run.finish(t, {"config": {"x": 1}}, {**run.base_metrics(t), "val_loss": t.best})
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["completed"] is True and metrics["final_step"] == 8 and metrics["best_step"] == 4
    assert (tmp_path / "r" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "r" / "model" / "config.json").is_file()
    assert len((tmp_path / "r" / "history.csv").read_text().splitlines()) > 8


def test_resume_auto_starts_a_new_run_then_continues_it(tmp_path):
    first = Run(tmp_path, resume="auto")
    assert first.saved is None
    t = trainer(first)
    t.fit(until=4)  # a checkpoint at 4, as if interrupted there
    again = Run(tmp_path, resume="auto")
    assert again.saved is not None and again.saved.path.name == "step-0000004"
    resumed = trainer(again)
    assert again.fit(resumed) and resumed.step == 8


def finished_run(path, **kw) -> dict[str, bytes]:
    """Train a run to its end as a training command does; every file it wrote, with its bytes."""
    run = Run(path)
    t = trainer(run, **kw)
    assert run.fit(t)
    run.finish(t, {"config": {"x": 1}}, {**run.base_metrics(t), "val_loss": t.best})
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_finished_run_resumed_auto_trains_nothing_and_keeps_its_files(tmp_path):
    """A notebook's training cell run again: the run as it was, its speed figures included."""
    files = finished_run(tmp_path)
    again = Run(tmp_path, resume="auto")
    t = trainer(again)
    assert again.fit(t) and again.already_finished and t.step == 8 and t.step_times == []
    metrics = again.base_metrics(t)
    again.finish(t, {"config": {"x": 1}}, {**metrics, "val_loss": t.best})
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == files
    saved = json.loads(files[tmp_path / "metrics.json"])
    assert metrics["tokens_per_s"] == saved["tokens_per_s"] > 0 and metrics["completed"] and metrics["final_step"] == 8


def test_resuming_a_finished_run_needs_more_steps(tmp_path):
    finished_run(tmp_path)
    run = Run(tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"already finished \(reached max_iters at step 8\); pass a larger "):
        run.fit(trainer(run))
    run = Run(tmp_path, resume=True)
    longer = trainer(run, max_iters=12)
    assert run.fit(longer) and longer.step == 12 and not run.already_finished
    run.finish(longer, {"config": {"x": 1}}, run.base_metrics(longer))
    run = Run(tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"is at step 12, past max_iters=4; pass a max_iters \(--max-iters\) above 12 to train on$"):
        run.fit(trainer(run, max_iters=4))


def test_a_run_that_stopped_early_is_not_trained_on_when_resumed(tmp_path):
    finished_run(tmp_path, max_iters=16, patience=1)  # no better validation loss at step 8: stops there
    assert json.loads((tmp_path / "metrics.json").read_text())["final_step"] == 8
    run = Run(tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"already finished \(stopped early at step 8\); .*\(or --patience\)"):
        run.fit(trainer(run, max_iters=16, patience=1))
    t = trainer(Run(None), max_iters=16, patience=1)
    assert t.resume(run.saved.path) and t.fit() is not None and t.step == 8 and t.finished
    t = trainer(Run(None), max_iters=16, patience=3)  # more patience: it trains on
    t.resume(run.saved.path)
    t.fit()
    assert t.step == 16


def test_a_run_of_another_kind_is_not_resumed(tmp_path):
    trainer(Run(tmp_path)).fit(until=4)  # its checkpoints carry a config and no finetune.json: a pretraining run
    assert Run(tmp_path, resume=True, kind="pretrain").saved is not None
    for kind in ("finetune", "seq2seq-train"):
        with pytest.raises(ValueError, match=rf"holds a pretrain run, not a {kind} run; resume it with "
                                             r"`python -m workbench pretrain --resume`, or choose another --out"):
            Run(tmp_path, resume=True, kind=kind)


def test_saved_config_differences_are_refused_with_the_flag_to_drop(tmp_path):
    trainer(Run(tmp_path)).fit(until=4)
    run = Run(tmp_path, resume=True)
    run.check_same("config", {"data": {"corpus": "a"}, "model": {"n_layer": 1, "vocab_size": 99}},
                   ignore=("model.vocab_size",))  # the same run: no error
    token = COMMAND_LINE.set(True)
    try:
        with pytest.raises(ValueError, match=r"^model.n_layer=2 differs from the checkpoint's 1; drop --n-layer \(or "
                                             r"the --preset that sets it\) to resume as saved"):
            run.check_same("config", {"model": {"n_layer": 2}})
        run.kind = "finetune"  # a command without --preset
        with pytest.raises(ValueError, match=r"^model.n_layer=2 differs from the checkpoint's 1; drop --n-layer to "
                                             r"resume as saved, or start a new run in another --out$"):
            run.check_same("config", {"model": {"n_layer": 2}})
        run.kind = None
    finally:
        COMMAND_LINE.reset(token)
    # in a notebook or the library: the field and its saved value, or another run_dir (01 and 06 rerun with a
    # new corpus in the same run_dir meet this)
    with pytest.raises(ValueError, match=rf"^model.n_layer=2 differs from the checkpoint's 1 in {re.escape(str(tmp_path))}; give "
                                         r"model.n_layer=1 to resume it as saved, or train in another out_dir \(a "
                                         r"notebook: another run_dir\)$"):
        run.check_same("config", {"model": {"n_layer": 2}})


@pytest.mark.parametrize("resume, fix", [(False, "already holds files; pass --resume"),
                                         (True, "no checkpoint to resume; drop --resume")])
def test_out_dir_checks_name_the_fix(tmp_path, resume, fix):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises((ValueError, FileNotFoundError), match=fix):
        Run(tmp_path, resume=resume)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # nothing written or removed


def test_a_run_killed_while_writing_its_first_checkpoint_starts_again(tmp_path, caplog):
    """A SIGKILL inside the first save_checkpoint leaves only a hidden temp folder: --resume says there is
    nothing to resume and to drop it; without --resume (and "auto", notebook 02's cell run again) the run
    starts afresh, where it used to say "already holds files; pass --resume" (a circle)."""
    unfinished = tmp_path / "checkpoints" / ".step-0000004.tmp-4242"
    unfinished.mkdir(parents=True)
    (unfinished / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(FileNotFoundError, match="was stopped while writing its first checkpoint, so there is nothing "
                                                "to resume; drop --resume to start it again"):
        Run(tmp_path, resume=True)
    assert unfinished.is_dir()  # nothing removed by the refused resume
    assert Run(tmp_path, resume="auto").saved is None
    assert not (tmp_path / "checkpoints").exists() and "unfinished first checkpoint" in caplog.text
    trainer(Run(tmp_path)).fit(until=4)  # the new run's own checkpoint
    unfinished.mkdir()  # beside a complete checkpoint it is not a start that failed: the run is resumed
    assert Run(tmp_path, resume="auto").saved is not None and unfinished.is_dir()
    with pytest.raises(ValueError, match="already holds files; pass --resume"):
        Run(tmp_path)


def test_an_out_dir_under_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes.txt/run/a lies under .*notes.txt, a file; choose another path for --out"):
        Run(tmp_path / "notes.txt" / "run" / "a")  # the first checkpoint, minutes later, could not be written
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert Run(tmp_path / "new" / "run").saved is None  # folders that do not exist yet are made when it writes


@pytest.mark.parametrize("resume", [True, "auto"])
def test_a_run_whose_every_step_checkpoint_is_damaged_is_not_resumed(tmp_path, resume):
    trainer(Run(tmp_path)).fit(until=4)
    model_file = tmp_path / "checkpoints" / "step-0000004" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:100])
    with pytest.warns(UserWarning, match="step-0000004: model.safetensors is damaged"):
        with pytest.raises(FileNotFoundError, match=r"every step checkpoint in .* is damaged \(see the warnings\); "
                                                    "copy the run again from its source, or drop --resume"):
            Run(tmp_path, resume=resume)
    assert len(model_file.read_bytes()) == 100  # left as it was


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resume_is_exact(tmp_path):
    straight = trainer(Run(tmp_path / "a"), max_iters=12)
    straight.fit()
    handler = signal.getsignal(signal.SIGINT)
    run = Run(tmp_path / "b")
    stopped = trainer(run, max_iters=12)
    stopped.callbacks.append(SigintAt(6))
    assert run.fit(stopped) is False
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C means KeyboardInterrupt again after training
    assert stopped.step == 6 and stopped.history.records[-1]["step"] == 6
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step-0000006"  # not an evaluation step
    again = Run(tmp_path / "b", resume=True)
    resumed = trainer(again, max_iters=12)
    assert again.fit(resumed)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    t = trainer(Run(tmp_path), max_iters=12)
    t.callbacks.append(SigintAt(6, times=2))
    with pytest.raises(KeyboardInterrupt), stop_on_sigint(t):
        t.fit()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000004"


def test_an_interrupted_run_says_in_one_line_how_to_continue_it(tmp_path, caplog, monkeypatch):
    """In a notebook: resume=True; on the command line (`python -m workbench` sets COMMAND_LINE): the command,
    whose bare `--resume --out DIR` reloads the run's settings; torchrun's for a run of several processes."""
    run = Run(tmp_path / "a", kind="pretrain")
    t = trainer(run, max_iters=12)
    t.callbacks.append(SigintAt(6))
    with caplog.at_level(logging.WARNING, "workbench.run"):
        assert run.fit(t) is False
    assert [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()] == [
        f"interrupted at step 6 of 12; rerun with resume=True to continue from {tmp_path / 'a' / 'checkpoints'}"]
    token = COMMAND_LINE.set(True)
    try:
        python = tmp_path / "env" / "bin" / "python"  # this process's interpreter, outside the working directory
        monkeypatch.setattr(sys, "executable", str(python))
        out = tmp_path / "my runs" / "x"  # a space: quoted, so the line can be pasted into a shell
        assert how_to_continue(out, "finetune", DistInfo()) == (
            f"to continue: {python} -m workbench finetune --out '{out}' --resume")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert how_to_continue(tmp_path, "pretrain", DistInfo(0, 2, 0)) == (  # no torchrun beside it: its module
            f"to continue: {python} -m torch.distributed.run --standalone --nproc_per_node=2 -m workbench pretrain "
            f"--out {tmp_path} --resume")
        python.parent.mkdir(parents=True)
        (python.parent / "torchrun").touch()
        monkeypatch.chdir(tmp_path)  # under the working directory: shown relative, as README writes .venv/bin/python
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
        assert how_to_continue(tmp_path, "pretrain", DistInfo(0, 16, 0)).startswith(
            "to continue: env/bin/torchrun (on every node, with the flags it was started with) -m workbench pretrain --out ")
        assert how_to_continue(tmp_path, None, DistInfo()).startswith("rerun with resume=True")  # Run(kind=None)
        assert how_to_continue(None, "pretrain", DistInfo()) == "without an out_dir there is no checkpoint to resume"
    finally:
        COMMAND_LINE.reset(token)
