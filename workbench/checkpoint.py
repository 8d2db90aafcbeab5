"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a directory:

    model.safetensors       weights (tied tensors stored once)
    optimizer.safetensors   optimizer moments and RNG states (resumable checkpoints only)
    best.safetensors        the best weights so far, for early stopping's restore (resumable only)
    state.json              loop state: step, best metric, optimizer hyper-parameters, ...
    history.json            every logged metric so far
    <name>.json             artifacts the caller hands in: config, tokenizer, labels, ...

It is first written to a hidden sibling directory and then renamed into place, so a
crash mid-write never leaves a half-written checkpoint where a reader looks. Loading
reads only safetensors and JSON: it never unpickles anything. Every JSON file goes
through `write_json`, which writes strict JSON (`json_safe`: NaN and infinities as null).
A file damaged later (a disk filled mid-copy, an interrupted download) is caught on every
read: `DamagedCheckpointError`, one line naming the file and the fix.

A training run directory keeps resumable checkpoints under `checkpoints/step-NNNNNNN/`
with a `checkpoints/latest` pointer (`save_step`), and the final (best) model in `model/`.
`latest_checkpoint` skips (with a warning) step checkpoints whose files are damaged, so a
resume continues from the newest complete one; pruning (`prune_steps`) never deletes them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.json"
HISTORY_FILE = "history.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
# What a resumable step checkpoint must hold to resume from it (best.safetensors is optional), and what
# resuming (Trainer.resume) reads from its state.json and optimizer.safetensors.
STEP_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, HISTORY_FILE)
STATE_KEYS = ("step", "best", "best_step", "evals_since_best", "param_groups")


class DamagedCheckpointError(ValueError):
    """A checkpoint file is missing, truncated or unreadable. The message is one line that names the
    file and the fix (the command line prints it as its `error:` line)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())  # one line: safetensors' messages may hold newlines
        super().__init__(f"checkpoint file {self.path} {self.problem}; copy it again from its source, or retrain "
                         f"(--resume continues a run from its newest complete step checkpoint)")


def read_json(path: Path) -> Any:
    """The content of a checkpoint's JSON file; DamagedCheckpointError when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedCheckpointError(path, "is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedCheckpointError(path, f"is damaged (truncated or not JSON: {e})") from None
    except OSError as e:
        raise DamagedCheckpointError(path, f"cannot be read ({e.strerror or e})") from None


@contextlib.contextmanager
def reading_safetensors(path: Path):
    """Turn what safetensors raises for a missing, truncated or foreign file read in this block into
    DamagedCheckpointError. safetensors checks at open time that the file is as long as its header
    says (tests/test_checkpoint.py), so a truncated file fails before any tensor is read."""
    try:
        yield
    except FileNotFoundError:
        raise DamagedCheckpointError(path, "is missing") from None
    except SafetensorError as e:
        raise DamagedCheckpointError(path, f"is damaged (truncated or not safetensors: {e})") from None
    except OSError as e:
        raise DamagedCheckpointError(path, f"cannot be read ({e.strerror or e})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (CPU); DamagedCheckpointError when it is missing or damaged."""
    with reading_safetensors(path):
        return load_file(str(path))


def check_safetensors(path: Path) -> None:
    """Open a safetensors file without reading its tensors: the header parses and the file is as long
    as the header says. DamagedCheckpointError otherwise."""
    with reading_safetensors(path), safe_open(str(path), "pt"):
        pass


def check_complete(path: Path, required: tuple[str, ...] = (MODEL_FILE,)) -> dict[str, Any]:
    """Cheaply check that every file of the checkpoint directory `path` opens: the `required` ones exist,
    every safetensors header fits its file, every JSON file parses. DamagedCheckpointError names the
    first file that does not. Returns the parsed JSON files by name ("state.json": {...})."""
    for name in required:
        if not (path / name).is_file():
            raise DamagedCheckpointError(path / name, "is missing")
    for f in sorted(path.glob("*.safetensors")):
        check_safetensors(f)
    return {f.name: read_json(f) for f in sorted(path.glob("*.json"))}


def check_step(path: Path) -> None:
    """`check_complete` for a resumable step checkpoint, and that its state.json and optimizer.safetensors
    hold what resuming reads, its history.json a list and its config.json and tokenizer.json (where it has
    them) objects: a file of another shape is as damaged as a truncated one. (Whether an object's fields
    are right is for the class that reads it: a one-line error naming the file, see `build_artifact`.)"""
    parsed = check_complete(path, STEP_FILES)  # every JSON file, read once
    for name, kind in ((HISTORY_FILE, list), ("config.json", dict), ("tokenizer.json", dict)):
        if name in parsed and not isinstance(parsed[name], kind):
            raise DamagedCheckpointError(path / name, f"is damaged (not a JSON {'list' if kind is list else 'object'})")
    state = parsed[STATE_FILE]
    if not (isinstance(state, dict) and all(k in state for k in STATE_KEYS) and isinstance(state["step"], int)
            and isinstance(state["param_groups"], list)):
        raise DamagedCheckpointError(path / STATE_FILE, "is damaged (not a step checkpoint's loop state: "
                                     f"an object with {', '.join(STATE_KEYS)})")
    with reading_safetensors(path / OPTIMIZER_FILE), safe_open(str(path / OPTIMIZER_FILE), "pt") as f:
        if "rng.torch" not in f.keys():
            raise DamagedCheckpointError(path / OPTIMIZER_FILE, "is damaged (it lacks the rng.torch state of a "
                                         "step checkpoint)")


def _is_complete_step(path: Path) -> bool:
    """Whether `check_step` passes."""
    try:
        check_step(path)
    except DamagedCheckpointError:
        return False
    return True


def check_fits(path: Path, shapes: Mapping[str, Any], model: torch.nn.Module) -> None:
    """A one-line ValueError naming the first tensor of the weights file `path` (`shapes`: name -> shape)
    that `model` holds in another shape; loading it would end in a RuntimeError with a line per tensor."""
    expected = model.state_dict()
    for name, shape in shapes.items():
        if name in expected and list(shape) != list(expected[name].shape):
            raise ValueError(f"{path} does not fit this model: {name} is {list(shape)} in the file but "
                             f"{list(expected[name].shape)} in the model; build the model from the checkpoint's "
                             f"config.json (if it was, config.json and {path.name} are from different runs: copy "
                             "the checkpoint again from its source)")


def build_artifact(path: Path, content: Any, build: Callable[[Any], Any]) -> Any:
    """`build(content)`, `content` being the parsed JSON file `path`: a ValueError (the JSON parses but
    is not what `build` takes) becomes DamagedCheckpointError naming the file."""
    try:
        return build(content)
    except ValueError as e:
        raise DamagedCheckpointError(path, f"is damaged ({e})") from None


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns; tensors stay on CPU until the caller moves them."""

    path: Path
    artifacts: dict[str, Any]  # name -> JSON content (config, tokenizer, ...)
    state: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # optimizer.safetensors content

    def artifact(self, name: str, build: Callable[[Any], Any]) -> Any:
        """`build(artifacts[name])`, e.g. `c.artifact("config", RunConfig.from_dict)` (see `build_artifact`)."""
        return build_artifact(self.path / f"{name}.json", self.artifacts[name], build)

    def load_weights(self, model: torch.nn.Module) -> None:
        """Copy the saved weights into `model` (strict: every key and shape must match)."""
        path = self.path / MODEL_FILE
        with reading_safetensors(path):
            with safe_open(str(path), "pt") as f:
                check_fits(path, {name: f.get_slice(name).get_shape() for name in f.keys()}, model)
            missing, unexpected = load_model(model, str(path), strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {self.path} does not fit this model (missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}); build the model from the checkpoint's config.json")

    def state_dict(self, model: torch.nn.Module, filename: str = MODEL_FILE) -> dict[str, torch.Tensor]:
        """The saved weights (CPU) named as `model.state_dict()` names them: a tied weight, stored
        once, appears under each of its names (for loading into a sharded model)."""
        weights = read_tensors(self.path / filename)
        check_fits(self.path / filename, {name: w.shape for name, w in weights.items()}, model)
        for names in tied_groups(model):
            stored = next((weights[n] for n in names if n in weights), None)
            if stored is not None:
                weights.update({n: stored for n in names})
        return weights

    def best_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The best weights so far of a resumable checkpoint (as `state_dict`), or None."""
        return self.state_dict(model, BEST_FILE) if (self.path / BEST_FILE).is_file() else None

    def optimizer_state(self) -> dict:
        """The optimizer.state_dict() saved by `save_step`."""
        return optimizer_from_tensors(self.tensors, self.state["param_groups"])

    def restore_rng(self, data_generator: torch.Generator | None = None) -> None:
        """Put every RNG state saved by `save_step` back (torch, CUDA, the data sampler)."""
        restore_rng(self.tensors, data_generator)


def json_safe(obj: Any) -> Any:
    """obj as plain, strict JSON values, converted recursively.

    numpy and torch scalars (and one-element tensors) become Python numbers, paths strings,
    tuples lists, mapping keys strings, and NaN or ±inf None (strict JSON has no NaN).
    Anything else is left for `json.dump` to accept or refuse.
    """
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic) or (isinstance(obj, torch.Tensor) and obj.numel() == 1):
        obj = obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write `json_safe(obj)` atomically: a temp file beside the target, then os.replace.

    Raises:
        TypeError: for a value JSON cannot hold (e.g. a multi-element tensor); nothing is written.
    """
    text = json.dumps(json_safe(obj), indent=1, allow_nan=False)  # fails before touching the disk
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a directory in the way, Ctrl-C: no temp file left behind
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, model: torch.nn.Module, artifacts: dict[str, Any] | None = None,
                    state: dict[str, Any] | None = None, history: list[dict] | None = None,
                    tensors: dict[str, torch.Tensor] | None = None,
                    weights: dict[str, torch.Tensor] | None = None,
                    best: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint directory atomically and return its path.

    Args:
        path: target directory; an existing one is replaced only once the new one is complete.
        model: its state_dict goes to model.safetensors.
        weights: `model`'s whole state dict, when `model` itself holds only a shard (FSDP); it is
            written as `model` would be, each tied weight once.
        artifacts: name -> JSON-able object, each written as <name>.json.
        state, history: loop state and metric records (JSON).
        tensors: extra tensors (optimizer state, RNG states) for optimizer.safetensors.
        best: another whole state dict of `model` (the best weights so far), for best.safetensors.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if weights is None:
        save_model(model, str(tmp / MODEL_FILE))
    else:
        save_weights(weights, model, tmp / MODEL_FILE)
    if tensors:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / OPTIMIZER_FILE))
    if best:
        save_weights(best, model, tmp / BEST_FILE)
    mode = new_file_mode()
    for f in tmp.glob("*.safetensors"):  # safetensors writes them 0600 (through a temp file of its own)
        f.chmod(mode)
    for name, obj in (artifacts or {}).items():
        write_json(tmp / f"{name}.json", obj)
    if state is not None:
        write_json(tmp / STATE_FILE, state)
    if history is not None:
        write_json(tmp / HISTORY_FILE, history)
    _fsync_dir(tmp)
    if path.exists():  # swap: the old copy is removed only after the new one is in place
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def new_file_mode() -> int:
    """The permissions open() gives a new file: 0o666 less the process umask (which can only be read by
    setting it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def tied_groups(model: torch.nn.Module) -> list[list[str]]:
    """The names of each parameter registered under several names (sorted), e.g.
    [["lm_head.weight", "transformer.wte.weight"]] for a GPT with tied embeddings."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return [sorted(group) for group in names.values() if len(group) > 1]


def save_weights(weights: dict[str, torch.Tensor], model: torch.nn.Module, filename: str | Path) -> None:
    """Write a state dict gathered from a sharded `model` exactly as safetensors' save_model writes the
    model: each tied weight once, under the first of its names in sorted order, the others in the
    metadata pointing to it."""
    dropped = {name: names[0] for names in tied_groups(model) for name in names[1:]}
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items() if k not in dropped},
              str(filename), metadata=dropped or None)


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory meant by `path`: itself, or a run directory's latest checkpoint."""
    path = Path(path)
    if path.is_file():
        if (path.parent / MODEL_FILE).is_file() or (path.parent / CHECKPOINTS).is_dir():  # a file of a checkpoint
            raise FileNotFoundError(f"{path} is a file; point at the checkpoint or run directory that holds it "
                                    f"({path.parent})")
        raise FileNotFoundError(f"{path} is a file, not a checkpoint; point at a training run's directory (its "
                                "--out)")
    if (path / MODEL_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train one first (python -m workbench pretrain --out {path})")
    if any(path.glob("*.json")) or any(path.glob("*.safetensors")):  # a checkpoint that lost its weights
        raise DamagedCheckpointError(path / MODEL_FILE, "is missing")
    raise FileNotFoundError(f"{path} holds no {MODEL_FILE}; point --checkpoint at a training run's --out directory")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint (or a run directory's latest complete one) without unpickling anything.

    The weights are read later (`Checkpoint.load_weights`, `state_dict`), but their files are opened
    here, so a damaged one fails before anything is built. Raises DamagedCheckpointError (a
    ValueError) naming a missing, truncated or unreadable file."""
    path = resolve_checkpoint(path)
    for f in (path / MODEL_FILE, path / BEST_FILE):
        if f.name == MODEL_FILE or f.exists():
            check_safetensors(f)
    artifacts = {}
    for f in sorted(path.glob("*.json")):
        if f.name not in (STATE_FILE, HISTORY_FILE):
            artifacts[f.stem] = read_json(f)
    state = read_json(path / STATE_FILE) if (path / STATE_FILE).exists() else {}
    history = read_json(path / HISTORY_FILE) if (path / HISTORY_FILE).exists() else []
    tensors = read_tensors(path / OPTIMIZER_FILE) if (path / OPTIMIZER_FILE).exists() else {}
    return Checkpoint(path=path, artifacts=artifacts, state=state, history=history, tensors=tensors)


# ------------------------------------------------------- run-directory layout
def step_checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:07d}"


def save_step(run_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | dict,
              data_generator: torch.Generator, state: dict[str, Any], history: list[dict],
              artifacts: dict[str, Any] | None = None, weights: dict[str, torch.Tensor] | None = None,
              best: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the resumable checkpoint of `step` (weights, optimizer moments, every RNG state, the best
    weights so far, loop state, history), point `checkpoints/latest` at it, and delete all but
    the newest two complete step checkpoints (`prune_steps`).

    Args:
        optimizer: the optimizer, or its whole state_dict (gathered from a sharded model).
        weights: the whole state dict when `model` holds only a shard (see `save_checkpoint`).
    Returns:
        the checkpoint directory.
    """
    tensors, _ = optimizer_to_tensors(optimizer)
    tensors.update(rng_tensors(data_generator))
    path = save_checkpoint(step_checkpoint_path(run_dir, step), model, artifacts, state, history, tensors,
                           weights, best)
    mark_latest(run_dir, path)
    prune_steps(run_dir, path)
    return path


def mark_latest(run_dir: str | Path, ckpt: Path) -> None:
    """Point `checkpoints/latest` at ckpt (a file holding its name, replaced atomically)."""
    root = Path(run_dir) / CHECKPOINTS
    tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    tmp.write_text(ckpt.name)
    os.replace(tmp, root / LATEST)


def prune_steps(run_dir: str | Path, ckpt: Path, keep: int = 2) -> None:
    """Delete all but the newest `keep` complete step checkpoints, never `ckpt` (the one just written).
    A damaged one is left on disk, as `latest_checkpoint`'s warning says (and does not count as kept)."""
    complete = [p for p in step_checkpoints(run_dir) if p == ckpt or _is_complete_step(p)]
    for old in complete[keep:]:
        if old != ckpt:  # renamed first: a crash mid-delete leaves a hidden folder, not a damaged checkpoint
            gone = old.with_name(f".{old.name}.old-{os.getpid()}")
            os.replace(old, gone)
            shutil.rmtree(gone, ignore_errors=True)


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """Every step checkpoint directory of a run directory, newest first (complete or not)."""
    root = Path(run_dir) / CHECKPOINTS
    return sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True) if root.is_dir() else []


def unfinished_start(run_dir: str | Path) -> bool:
    """Whether `run_dir` is what a run killed while writing its first checkpoint leaves: nothing but
    `checkpoints/`, holding nothing but the hidden temp folders of unfinished writes (".step-….tmp-PID")."""
    run_dir, root = Path(run_dir), Path(run_dir) / CHECKPOINTS
    if not root.is_dir() or [p.name for p in run_dir.iterdir()] != [CHECKPOINTS]:
        return False
    return all(p.name.startswith(".") and ".tmp-" in p.name for p in root.iterdir())


_WARNED: set[str] = set()  # the damaged step checkpoints `latest_checkpoint` has warned about


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete step checkpoint of a run directory (`check_step`), or None.

    A damaged one (a truncated file, a state.json of another shape, say) is skipped with a warning
    naming it, and left on disk.
    """
    root = Path(run_dir) / CHECKPOINTS
    candidates = step_checkpoints(run_dir)
    # The pointer first (it names the last checkpoint the run finished writing), then the others newest
    # first. The pointer is written after its checkpoint, so a crash between the two leaves a newer
    # complete directory that the pointer does not name yet: the run resumes from the pointer's, and
    # trains the steps after it again (exactly: the same batches, the same weights).
    try:
        named = root / (root / LATEST).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):  # missing or damaged: the step checkpoints alone tell
        named = None
    if named in candidates:
        candidates.remove(named)
        candidates.insert(0, named)
    for candidate in candidates:
        try:
            check_step(candidate)
        except DamagedCheckpointError as e:
            message = (f"skipping the damaged step checkpoint {candidate}: {e.path.name} {e.problem}; using an "
                       "earlier one (the damaged files are left as they are, until the run checkpoints that step again)")
            # once, however often the run directory is read (warnings' own once-per-line is forgotten
            # whenever some library changes the warning filters, as `catch_warnings` does)
            if message not in _WARNED:
                _WARNED.add(message)
                warnings.warn(message)
            continue
        return candidate
    return None


# ------------------------------------------------------- optimizer and RNG state
def optimizer_to_tensors(optimizer: torch.optim.Optimizer | dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimizer state_dict (or the optimizer's own) into flat tensors ("state.<param>.<name>")
    and JSON param groups."""
    sd = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    tensors = {}
    for pid, entries in sd["state"].items():
        for name, value in entries.items():
            tensors[f"state.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, sd["param_groups"]


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> dict:
    """Rebuild an optimizer state_dict from `optimizer_to_tensors` output."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": param_groups}


def rng_tensors(data_generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Every RNG state training touches (torch CPU, the CUDA device it trains on, the data sampler) as
    tensors. Only this process's device: under torchrun rank 0 writes the checkpoint, and every rank's
    generators advance alike (one seed, the same ops), so its state is every rank's (other devices'
    generators, as rank 0 sees them, were never used). CUDA is not started for a run that did not."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()  # the current device: cuda:<local rank> under torchrun
    if data_generator is not None:
        out["rng.data"] = data_generator.get_state()
    return out


def restore_rng(tensors: dict[str, torch.Tensor], data_generator: torch.Generator | None = None) -> None:
    """Set the states `rng_tensors` saved (the CUDA one on this process's current device)."""
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = tensors.get("rng.cuda")
        if cuda is None:  # a checkpoint of every device's state as rank 0 saw them ("rng.cuda.<index>"):
            cuda = tensors.get("rng.cuda.0")  # rank 0's own device's is every rank's, as above
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)
    if data_generator is not None and "rng.data" in tensors:
        data_generator.set_state(tensors["rng.data"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
