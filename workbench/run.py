"""A training run's lifecycle, the same for every training command (pretrain, finetune, ...).

An entry point builds its model, data and evaluator; `Run` does the rest:

    run = Run(out_dir, resume)                    # checks out_dir; loads the checkpoint to resume
    run.check_same("config", {...})               # a resumed run must be the run that was saved
    trainer = Trainer(..., run_dir=run.out)
    if run.fit(trainer):                          # resume, fit; Ctrl-C stops cleanly (False)
        run.finish(trainer, artifacts, metrics)   # model/, history.csv, metrics.json

and writes the run directory:

    out/model/          the final (best) model: model.safetensors and the artifacts (config.json, ...)
    out/checkpoints/    resumable step checkpoints and a `latest` pointer (workbench.checkpoint)
    out/history.csv     every logged metric
    out/metrics.json    the headline figures

Everything that can be checked is checked before the first file is written. Interrupted
(Ctrl-C, or `Trainer.request_stop`), a run writes nothing final: the checkpoint of the step it
stopped at is the run, and `resume=True` continues it exactly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistInfo, barrier, dist_info
from .train import Trainer, graph_problem, resolve_device

log = logging.getLogger(__name__)

FINAL = "model"
# The artifact that marks each kind of run's checkpoints (a pretraining run has neither), and the
# function that loads its final model.
RUN_KINDS = {"finetune": ("finetune", "finetune.load_finetuned"),
             "seq2seq-train": ("translation", "translator.load_translator")}


# the command that uses a kind of run's model on the command line (a fine-tuned classifier has none)
USED_BY = {"pretrain": "sample (or evaluate, export-hf)", "seq2seq-train": "translate"}
# True while `python -m workbench` runs a command: an interrupted run then names the command that continues
# it (its bare `--resume --out DIR` reloads the run's settings), not a notebook's resume=True
COMMAND_LINE: ContextVar[bool] = ContextVar("COMMAND_LINE", default=False)


def loader_of(kind: str) -> str:
    """The function that loads a `kind` run's final model, as `workbench.<module>.<function>` names it."""
    return RUN_KINDS[kind][1] if kind in RUN_KINDS else "pretrain.load_pretrained"


def run_kind(c: ckpt.Checkpoint | Path) -> str:
    """Which command wrote checkpoint `c` (loaded, or its directory): "pretrain", "finetune" or "seq2seq-train"."""
    names = c.artifacts if isinstance(c, ckpt.Checkpoint) else {p.stem for p in Path(c).glob("*.json")}
    return next((kind for kind, (marker, _) in RUN_KINDS.items() if marker in names), "pretrain")


def task_difference(saved: Any, now: dict[str, Any]) -> str:
    """What differs between a run's saved task description (`info()`) and the task given now, e.g.
    "n_train 1995 in the run, 1800 now"; "" when nothing does. A key the saved one lacks (a run saved
    before the key existed) is not compared."""
    if not isinstance(saved, dict):
        return f"the run's is {saved!r:.60}"
    return "; ".join(f"{k} {saved[k]!r} in the run, {now.get(k)!r} now" for k in saved if saved[k] != now.get(k))


def check_same_task(saved: ckpt.Checkpoint, now: dict[str, Any], flags: str) -> None:
    """A resumed finetune or seq2seq-train run trains on the task it started with: `now` (the task's
    `info()`) must equal the checkpoint's "task". `flags`: the command's task flags, for the message. A
    run that keeps no task_source or no fingerprint (written before runs kept them) says so."""
    task = saved.artifacts["task"]
    if difference := task_difference(task, now):
        how = (f"drop {flags}, which the run keeps, or pass the same ones" if "task_source" in saved.artifacts else
               f"this run does not keep how its task was loaded, so pass the {flags} it was started with")
        raise ValueError(f"the task differs from the run's ({difference}); resume with the task the run was started "
                         f"with (on the command line: {how})")
    if isinstance(task, dict) and "fingerprint" not in task:
        log.warning("this run keeps its task's sizes but no fingerprint of its rows (a run saved before runs kept "
                    "one): it resumes on the task given now; make sure it is the one it was started with (%s)", flags)


def how_to_continue(out: Path | None, kind: str | None, dist: DistInfo) -> str:
    """What the line of an interrupted run says to continue it: on the command line (`COMMAND_LINE`) the
    command, e.g. "to continue: .venv/bin/python -m workbench pretrain --out runs/x --resume" with this
    interpreter (its environment's torchrun for a run of several processes), else "rerun with resume=True to
    continue from runs/x/checkpoints"."""
    if out is None:
        return "without an out_dir there is no checkpoint to resume"
    if not (COMMAND_LINE.get() and kind is not None):
        return f"rerun with resume=True to continue from {out / ckpt.CHECKPOINTS}"
    # this environment's interpreter (.venv/bin/python) and torchrun, not whichever is first on PATH
    launcher = _shown_path(sys.executable)
    if dist.enabled:  # one node: its size; several: the torchrun flags they were started with
        torchrun = Path(sys.executable).with_name("torchrun")
        torchrun = _shown_path(str(torchrun)) if torchrun.exists() else f"{launcher} -m torch.distributed.run"
        one_node = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size)) == dist.world_size
        launcher = (f"{torchrun} --standalone --nproc_per_node={dist.world_size}" if one_node
                    else f"{torchrun} (on every node, with the flags it was started with)")
    return f"to continue: {launcher} -m workbench {kind} --out {shlex.quote(str(out))} --resume"


def _shown_path(path: str) -> str:
    """path as a shell argument, relative to the working directory when it lies under it (.venv/bin/python)."""
    relative = os.path.relpath(path)
    return shlex.quote(path if relative.startswith("..") else relative)


def check_one_process(kind: str | None) -> None:
    """Refuse torchrun for a kind of run that trains in one process (`RUN_KINDS`: finetune and
    seq2seq-train draw whole batches, not each rank's slice, so every rank would train on the same ones)."""
    if kind in RUN_KINDS and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"{kind} trains in one process (every rank would draw the same batches); run it "
                         "without torchrun: pretrain is the command that trains across ranks")


def check_kind(out: Path, found: str, kind: str) -> None:
    """Refuse to resume, as a `kind` run, the run in `out` that a `found` run's command wrote."""
    if found != kind:
        raise ValueError(f"{out} holds a {found} run, not a {kind} run; resume it with "
                         f"`python -m workbench {found} --resume`, or choose another --out")


def check_writable(path: Path, flag: str = "--out", is_dir: bool = True) -> None:
    """Refuse, before any work, an output path that cannot be written when the work is done: a file
    where a directory goes (or the reverse), a path under a file, or a directory not writable here."""
    if path.exists() and path.is_dir() != is_dir:
        want = "a directory path" if is_dir else "a file path"
        raise ValueError(f"{flag} {path} is a {'directory' if path.is_dir() else 'file'}; choose {want} for {flag}")
    parent = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if parent != path.absolute() and not parent.is_dir():
        raise ValueError(f"{flag} {path} lies under {parent}, a file; choose another path for {flag}")
    if not os.access(parent if parent.is_dir() else parent.parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {parent} is not writable here; choose a {flag} you can write to")


def clear_unfinished_start(out_dir: Path) -> None:
    """Remove what a run killed while writing its first checkpoint left (`checkpoint.unfinished_start`),
    so that it starts again where it would otherwise be "already holds files" and "nothing to resume"."""
    if ckpt.unfinished_start(out_dir):
        log.warning("removing %s: it holds only the unfinished first checkpoint of a run stopped while writing it",
                    out_dir / ckpt.CHECKPOINTS)
        shutil.rmtree(out_dir / ckpt.CHECKPOINTS)


def check_out_dir(out_dir: Path, resume: bool) -> Path | None:
    """Refuse to overwrite an existing run unless resuming it; the checkpoint to resume from (or None).
    A path that cannot be written is refused now, not when the first checkpoint is written."""
    check_writable(out_dir)
    if resume:
        latest = ckpt.latest_checkpoint(out_dir)
        if latest is None:
            if ckpt.step_checkpoints(out_dir):
                raise FileNotFoundError(f"--resume: every step checkpoint in {out_dir / ckpt.CHECKPOINTS} is damaged "
                                        "(see the warnings); copy the run again from its source, or drop --resume "
                                        "and start a new run in another --out")
            if ckpt.unfinished_start(out_dir):
                raise FileNotFoundError(f"--resume: the run in {out_dir} was stopped while writing its first "
                                        "checkpoint, so there is nothing to resume; drop --resume to start it again")
            raise FileNotFoundError(f"--resume: {out_dir} has no checkpoint to resume; drop --resume to start a new run")
        return latest
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} already holds files; pass --resume to continue that run or choose another --out")
    return None


def setup_device(config: TrainConfig, dist: DistInfo) -> torch.device:
    """The device this process trains on, with the process-wide settings that go with it:
    cuda:<local rank> under torchrun, and TF32 for the fp32 matmuls that bf16 autocast leaves. Entry
    points call it first, so a cuda_graph that cannot run here is refused before any data is read."""
    device = resolve_device(config.device)
    if config.cuda_graph and (problem := graph_problem(device, dist)):
        raise ValueError(problem)
    if device.type == "cuda":
        if dist.enabled:
            device = torch.device("cuda", dist.local_rank)
        torch.set_float32_matmul_precision("high")
    return device


@contextlib.contextmanager
def stop_on_sigint(trainer: Trainer):
    """While training, a first SIGINT (Ctrl-C, or a notebook's interrupt button) asks `trainer` to stop
    after the current step, with a checkpoint; a second one raises KeyboardInterrupt at once."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        log.warning("Ctrl-C: stopping after this step (press again to stop at once, without saving)")
        trainer.request_stop()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Run:
    """One training run's directory: checks, the checkpoint to resume, fit, the final files.

    Args:
        out_dir: the run directory; None trains without writing anything.
        resume: True continues the run in out_dir from its latest checkpoint; "auto" does so when
            there is one and starts a new run otherwise (a notebook cell that can simply be run
            again after an interruption); False starts a new run in a new or empty out_dir.
        kind: the command training it ("pretrain", "finetune", "seq2seq-train"): a run of another
            kind in out_dir is not resumed.
    Attributes:
        out, kind, saved (the checkpoint to resume, or None), dist (`distributed.dist_info()`), started,
        already_finished (resume="auto" found the run finished: `fit` trains nothing, `finish`
        writes nothing, `base_metrics` gives the figures the run reported).
    """

    def __init__(self, out_dir: str | Path | None, resume: bool | str = False, kind: str | None = None):
        self.started = time.perf_counter()
        self.out = Path(out_dir) if out_dir is not None else None
        self.kind = kind
        self.auto = resume == "auto"
        self.already_finished = False
        if resume == "auto":  # any step checkpoint, complete or damaged (then check_out_dir says so)
            resume = self.out is not None and bool(ckpt.step_checkpoints(self.out))
        if resume and self.out is None:
            raise ValueError("resume needs the out_dir of the run to continue")
        check_one_process(kind)
        self.dist = dist_info()
        if self.out is not None and not resume:
            if self.dist.is_main:
                clear_unfinished_start(self.out)
            barrier(self.dist)  # every rank checks out_dir after rank 0 has cleared it
        latest = check_out_dir(self.out, bool(resume)) if self.out is not None else None
        barrier(self.dist)  # every rank has checked out_dir before rank 0 writes into it
        # the newest complete step checkpoint, found (and its files checked) once
        self.saved = ckpt.load_checkpoint(latest) if latest is not None else None
        if self.saved is not None and kind is not None:
            check_kind(self.out, run_kind(self.saved), kind)

    def check_same(self, artifact: str, given: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
        """A resumed run must be the saved one: every field of `given` (nested sections allowed, e.g.
        {"data": {...}, "model": {...}}) must equal the saved artifact's, except `ignore` ("model.vocab_size").
        The error names the fix in the caller's terms: a flag on the command line (`COMMAND_LINE`), else a field."""
        if self.saved is None:
            return

        def compare(saved: dict, new: dict, prefix: str) -> None:
            for key, value in new.items():
                name = f"{prefix}{key}"
                if name in ignore or key not in saved:
                    continue
                if isinstance(value, dict) and isinstance(saved[key], dict):
                    compare(saved[key], value, f"{name}.")
                elif saved[key] != value and COMMAND_LINE.get():
                    preset = " (or the --preset that sets it)" if self.kind in ("pretrain", None) else ""
                    raise ValueError(f"{name}={value!r} differs from the checkpoint's {saved[key]!r}; drop "
                                     f"--{key.replace('_', '-')}{preset} to resume as saved, or start a new run in "
                                     "another --out")
                elif saved[key] != value:  # the library, a notebook
                    raise ValueError(f"{name}={value!r} differs from the checkpoint's {saved[key]!r} in {self.out}; "
                                     f"give {name}={saved[key]!r} to resume it as saved, or train in another out_dir "
                                     "(a notebook: another run_dir)")

        compare(self.saved.artifacts[artifact], given, "")

    def fit(self, trainer: Trainer) -> bool:
        """Resume `trainer` from the saved checkpoint (if any) and train; True when the run completed,
        False when it was stopped (Ctrl-C: its checkpoint is the run; resume continues it)."""
        if self.saved is not None:
            trainer.resume(self.saved.path)
            self._check_left_to_train(trainer)
            if self.already_finished:
                log.info("the run in %s already finished at step %d: nothing to train", self.out, trainer.step)
        with stop_on_sigint(trainer):
            trainer.fit()
        if not trainer.finished and self.dist.is_main:  # one line, also under torchrun; the command line adds none
            log.warning("interrupted at step %d of %d; %s", trainer.step, trainer.config.max_iters,
                        how_to_continue(self.out, self.kind, self.dist))
        return trainer.finished

    def _check_left_to_train(self, trainer: Trainer) -> None:
        """A resumed run must have steps left, unless it finished and resume="auto" (a notebook cell run
        again): resuming then would write its model/ and metrics.json again without the speed figures."""
        max_iters = trainer.config.max_iters
        if trainer.step > max_iters:
            raise ValueError(f"the checkpoint in {self.out} is at step {trainer.step}, past max_iters={max_iters}; "
                             f"pass a max_iters (--max-iters) above {trainer.step} to train on")
        if not (trainer.step == max_iters or trainer.stopped_early) or not (self.out / FINAL).is_dir():
            return  # steps left, or it stopped after its last checkpoint and before writing model/: finish it
        if self.auto:
            self.already_finished = True
            return
        how = "stopped early" if trainer.stopped_early else "reached max_iters"
        raise ValueError(f"the run in {self.out} already finished ({how} at step {trainer.step}); pass a larger "
                         "--max-iters (or --patience) to train it on, or start a new run in another --out")

    def finish(self, trainer: Trainer, artifacts: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Write model/ (the trained model, restored to its best weights), history.csv and metrics.json.

        Collective under FSDP (every rank helps gather the weights); rank 0 writes.
        """
        if self.already_finished:  # its files are the run's; nothing new to write
            return
        weights = trainer.parallel.whole_state() if self.out is not None else None
        if self.out is None or not self.dist.is_main:
            return
        ckpt.save_checkpoint(self.out / FINAL, trainer.model, artifacts, weights=weights)
        trainer.history.df.to_csv(self.out / "history.csv", index=False)
        ckpt.write_json(self.out / "metrics.json", metrics)

    def base_metrics(self, trainer: Trainer) -> dict[str, Any]:
        """What every run reports: completed, the step of the best monitored value, where it stopped,
        the speed figures (`Trainer.summary`), wall time, device and the dtype it computed in
        (`--dtype auto` decides by timing the machine: "bfloat16" autocast or "float32")."""
        if self.already_finished:  # no step ran here: the figures of the session that trained it
            saved = ckpt.read_json(self.out / "metrics.json") if (self.out / "metrics.json").exists() else {}
            figures = {k: saved[k] for k in ("ms_per_iter_median", "tokens_per_s", "train_s", "wall_s") if k in saved}
        else:
            figures = {**trainer.summary(), "wall_s": time.perf_counter() - self.started}
        return {"completed": trainer.finished, "best_step": trainer.best_step, "final_step": trainer.step,
                **figures, "device": str(trainer.device), "compute_dtype": trainer.compute_dtype}


def load_final(path: str | Path, needs: tuple[str, ...], hint: str, train: str, kind: str | None = None
               ) -> ckpt.Checkpoint:
    """The checkpoint in a run directory's model/ folder (or `path` itself, a checkpoint directory),
    which must carry the artifacts `needs`; otherwise a FileNotFoundError ending in `hint` (and,
    when `path` does not exist, `train`: the command that makes such a run). With `kind`, a `run_kind`
    other than it, or a Hugging Face model folder, is a ValueError naming the loader it needs."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"pass the path of a run directory (its --out), got {path!r}; {hint}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; {hint}, or train one first ({train})")
    if (path / FINAL).is_dir():  # a run's final model, damaged or not (never silently a step checkpoint)
        path = path / FINAL
    c = ckpt.load_checkpoint(path)
    config = c.artifacts.get("config")
    if isinstance(config, dict) and "model_type" in config:  # export-hf's output, or a model from the Hub
        raise ValueError(f"{c.path} is a Hugging Face model folder ({config['model_type']!r}), not a workbench run; "
                         "load it with transformers' from_pretrained, or point at the run it was exported from")
    if kind is not None and (found := run_kind(c)) != kind:
        command = f" (on the command line: python -m workbench {USED_BY[found]})" if found in USED_BY else ""
        raise ValueError(f"{c.path} holds a {found} run's model, not a {kind} run's; {hint}, or load this one "
                         f"with workbench.{loader_of(found)}{command}")
    require_artifacts(c, needs, hint)
    return c


def require_artifacts(c: ckpt.Checkpoint, needs: tuple[str, ...], hint: str) -> None:
    """A FileNotFoundError naming each artifact of `needs` that checkpoint `c` lacks, ending in `hint`."""
    missing = [f"{name}.json" for name in needs if name not in c.artifacts]
    if missing:
        raise FileNotFoundError(f"{c.path} lacks {' and '.join(missing)}; {hint}, or copy the missing file "
                                "again from its source")
