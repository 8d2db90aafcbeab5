"""Checkpoint JSON: `write_json` writes strict JSON whatever numbers it is handed; a damaged checkpoint
file (truncated, garbage, missing) is one DamagedCheckpointError line naming it; `latest_checkpoint`
skips damaged step checkpoints.

(Saving, loading and resuming checkpoints are tested through the Trainer in test_train.py; damaged
checkpoints through the command line in test_cli.py.)"""

import json
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from workbench import checkpoint as ckpt
from workbench.checkpoint import DamagedCheckpointError, json_safe, write_json
from workbench.config import RunConfig
from workbench.tokenizer import tokenizer_from_dict


def strict_loads(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not strict JSON"))


def test_write_json_turns_numpy_torch_paths_and_non_finite_floats_into_strict_json(tmp_path):
    obj = {"np_float": np.float32(0.5), "np_int": np.int64(3), "np_bool": np.bool_(True), "scalar": torch.tensor(2.5),
           "one": torch.tensor([7]), "path": Path("runs") / "a", "pair": (1, float("nan")),
           3: {"inf": float("inf"), "-inf": -np.inf, "nan": torch.tensor(float("nan")), "text": "NaN"}}
    write_json(tmp_path / "m.json", obj)
    back = strict_loads((tmp_path / "m.json").read_text())
    assert back == {"np_float": 0.5, "np_int": 3, "np_bool": True, "scalar": 2.5, "one": 7, "path": "runs/a",
                    "pair": [1, None], "3": {"inf": None, "-inf": None, "nan": None, "text": "NaN"}}
    assert type(back["np_int"]) is int and type(back["np_bool"]) is bool
    assert json_safe(obj) == back  # write_json writes exactly json_safe's value
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # the temp file was renamed into place


def test_write_json_refuses_what_json_cannot_hold_and_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match="Tensor"):
        write_json(tmp_path / "m.json", {"weights": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ damaged files
def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to `keep` of its length, as a disk filled mid-copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        truncate(path)
    elif how == "garbage":
        path.write_bytes(b"\x00\xffnot what it should be" * 7)
    else:
        path.unlink()


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.5, 0.999])
def test_safetensors_refuses_a_truncated_file_when_it_opens(tmp_path, keep):
    """What the checks rely on: safetensors compares the file's length with its header at open time,
    before any tensor is read, so opening is enough to catch a truncated file (even one byte short)."""
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.ones(100, 10), "b": torch.zeros(3)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: min(int(len(data) * keep), len(data) - 1)])
    with pytest.raises(SafetensorError, match="header"):
        safe_open(str(path), "pt")


def saved(tmp_path) -> tuple[Path, torch.nn.Module]:
    """A checkpoint with every kind of file: weights, optimizer tensors, best weights and JSON."""
    model = torch.nn.Linear(4, 3)
    path = ckpt.save_checkpoint(tmp_path / "c", model, {"config": {"n": 1}}, state={"step": 4}, history=[{"step": 4}],
                                tensors={"state.0.exp_avg": torch.ones(3, 4)}, best=model.state_dict())
    return path, model


def load_everything(path: Path, model: torch.nn.Module) -> None:
    c = ckpt.load_checkpoint(path)
    c.load_weights(model)
    c.state_dict(model)
    c.best_state(model)


FILES = ["model.safetensors", "optimizer.safetensors", "best.safetensors", "config.json", "state.json", "history.json"]


# Only the weights are required of every checkpoint; the other files are optional (a final model/ has none of them).
@pytest.mark.parametrize("name, how", [(name, how) for name in FILES for how in ("truncated", "garbage")]
                         + [("model.safetensors", "missing")])
def test_every_damaged_file_is_one_line_naming_it_and_the_fix(tmp_path, name, how):
    path, model = saved(tmp_path)
    load_everything(path, model)  # intact, it loads
    damage(path / name, how)
    with pytest.raises(DamagedCheckpointError) as info:
        load_everything(path, model)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    assert message.startswith(f"checkpoint file {path / name} ")
    assert ("is missing" if how == "missing" else "is damaged (truncated or not") in message
    assert message.endswith("; copy it again from its source, or retrain "
                            "(--resume continues a run from its newest complete step checkpoint)")


def test_a_truncated_weights_file_fails_in_load_weights_too(tmp_path):
    """`Checkpoint.load_weights` reads the file itself: damaged after load_checkpoint, still one line."""
    path, model = saved(tmp_path)
    c = ckpt.load_checkpoint(path)
    truncate(path / "model.safetensors", 0.9)
    with pytest.raises(DamagedCheckpointError, match="model.safetensors is damaged"):
        c.load_weights(model)
    with pytest.raises(DamagedCheckpointError, match="model.safetensors is damaged"):
        c.state_dict(model)


def save_steps(run_dir: Path, steps) -> list[Path]:
    """Resumable step checkpoints of a small model, with the loop state a Trainer saves."""
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    state = {"best": None, "best_step": 0, "evals_since_best": 0,
             "param_groups": optimizer.state_dict()["param_groups"]}
    return [ckpt.save_step(run_dir, step, model, optimizer, torch.Generator(), {**state, "step": step}, [])
            for step in steps]


def test_latest_checkpoint_skips_damaged_step_checkpoints_with_a_warning(tmp_path):
    save_steps(tmp_path, (4, 8, 12))
    steps = ckpt.step_checkpoints(tmp_path)
    assert [p.name for p in steps] == ["step-0000012", "step-0000008"]  # prune_steps keeps two
    assert ckpt.latest_checkpoint(tmp_path) == steps[0]
    truncate(steps[0] / "optimizer.safetensors")
    before = (steps[0] / "optimizer.safetensors").read_bytes()
    with pytest.warns(UserWarning, match=r"skipping the damaged step checkpoint .*step-0000012: optimizer.safetensors"):
        assert ckpt.latest_checkpoint(tmp_path) == steps[1]  # though checkpoints/latest names step 12
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-0000012"
    assert (steps[0] / "optimizer.safetensors").read_bytes() == before  # left as it was
    (steps[1] / "state.json").write_text("{\"step\": 8, ")  # cut mid-write
    with pytest.warns(UserWarning) as caught:
        assert ckpt.latest_checkpoint(tmp_path) is None
    assert any("step-0000008: state.json is damaged (truncated or not JSON" in str(w.message) for w in caught)


def test_an_unreadable_latest_pointer_is_ignored_as_a_missing_one_is(tmp_path):
    *_, newest = save_steps(tmp_path, (4, 8))
    pointer = tmp_path / "checkpoints" / "latest"
    for content in (b"\xff\xfe", b"step-0000099", b""):
        pointer.write_bytes(content)
        assert ckpt.latest_checkpoint(tmp_path) == newest
    pointer.unlink()
    pointer.mkdir()
    assert ckpt.latest_checkpoint(tmp_path) == newest


@pytest.mark.parametrize("name, content", [("state.json", {}), ("state.json", []), ("state.json", {"step": 8}),
                                           ("optimizer.safetensors", {"state.0.exp_avg": torch.ones(3)}),
                                           ("history.json", {}), ("config.json", []), ("config.json", None)])
def test_a_step_checkpoint_file_of_another_shape_is_a_damaged_step_checkpoint(tmp_path, name, content):
    """Files that parse but lack what resuming reads (Trainer.resume: the loop state, param_groups, the
    RNG states; a history list; artifacts that are JSON objects) are skipped like truncated ones, or None
    when no step checkpoint is left."""
    older, newer = save_steps(tmp_path, (4, 8))
    for step in (newer, older):
        if name.endswith(".json"):
            write_json(step / name, content)
        else:
            save_file(content, str(step / name))
        with pytest.warns(UserWarning) as caught:
            assert ckpt.latest_checkpoint(tmp_path) == (older if step == newer else None)
        assert any(f"skipping the damaged step checkpoint {step}: {name} is damaged" in str(w.message) for w in caught)
    with pytest.raises(DamagedCheckpointError, match=f"{name} is damaged"):
        ckpt.check_step(newer)


def test_pruning_keeps_damaged_step_checkpoints_and_the_newest_complete_ones(tmp_path):
    """prune_steps keeps the newest two complete step checkpoints and never deletes a damaged one, as
    latest_checkpoint's warning says."""
    older, damaged = save_steps(tmp_path, (4, 8))
    truncate(damaged / "optimizer.safetensors")
    before = {f.name: f.read_bytes() for f in damaged.iterdir()}
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")  # Python's own rule: once per line of code
        assert ckpt.latest_checkpoint(tmp_path) == older  # a resume continues from step 4 ...
        warnings.filterwarnings("ignore", message="unrelated")  # a library changing the filters made Python
        assert ckpt.latest_checkpoint(tmp_path) == older  # forget that rule: the CLI reads the run twice
    assert [str(w.message)[:37] for w in shown] == ["skipping the damaged step checkpoint "]  # one, not two
    save_steps(tmp_path, (12,))  # ... and checkpoints step 12: step 4 is still one of the two complete ones
    assert [p.name for p in ckpt.step_checkpoints(tmp_path)] == ["step-0000012", "step-0000008", "step-0000004"]
    save_steps(tmp_path, (16,))
    assert [p.name for p in ckpt.step_checkpoints(tmp_path)] == ["step-0000016", "step-0000012", "step-0000008"]
    assert {f.name: f.read_bytes() for f in damaged.iterdir()} == before  # left as it was


def test_a_prune_cut_short_leaves_no_damaged_step_checkpoint(tmp_path, monkeypatch):
    """Since damaged step checkpoints are never pruned, one half deleted (a crash mid-prune) would stay for
    good: pruning renames it out of the way first."""
    def cut_short(path, ignore_errors=False):
        (path / "model.safetensors").unlink()

    monkeypatch.setattr(ckpt.shutil, "rmtree", cut_short)
    save_steps(tmp_path, (4, 8, 12))
    assert [p.name for p in ckpt.step_checkpoints(tmp_path)] == ["step-0000012", "step-0000008"]


def test_weights_of_another_shape_are_one_line_naming_the_tensor_and_the_fix(tmp_path):
    """A config.json edited (or copied from another run) so that the model it builds does not fit the weights:
    one line naming the first tensor that differs, not a RuntimeError with a line per tensor."""
    path, _ = saved(tmp_path)
    c = ckpt.load_checkpoint(path)
    wider = torch.nn.Linear(5, 3)  # the same bias, a wider weight
    for load, name in ((c.load_weights, "model"), (c.state_dict, "model"), (c.best_state, "best")):
        with pytest.raises(ValueError) as info:
            load(wider)
        assert str(info.value) == (
            f"{path / name}.safetensors does not fit this model: weight is [3, 4] in the file but [3, 5] in the "
            "model; build the model from the checkpoint's config.json (if it was, config.json and "
            f"{name}.safetensors are from different runs: copy the checkpoint again from its source)")


def test_a_failed_write_json_leaves_no_temp_file(tmp_path):
    (tmp_path / "m.json").mkdir()  # a directory where the file goes
    with pytest.raises(OSError):
        write_json(tmp_path / "m.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=oct)
def test_every_checkpoint_file_gets_the_permissions_open_gives(tmp_path, umask):
    """safetensors writes its files 0600 (through a temp file of its own); a checkpoint's weights must be as
    readable as its JSON files, as the umask says."""
    old = os.umask(umask)
    try:
        path, _ = saved(tmp_path)
    finally:
        os.umask(old)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()}
    assert modes == dict.fromkeys(FILES, 0o666 & ~umask)


def test_an_artifact_that_parses_but_is_not_what_it_should_be_names_its_file(tmp_path):
    """Checkpoint.artifact: the ValueError of the function that builds an artifact (a config section that is
    not an object, a tokenizer of another shape) becomes the one line naming the file."""
    path, _ = saved(tmp_path)
    write_json(path / "config.json", [])
    write_json(path / "tokenizer.json", None)
    c = ckpt.load_checkpoint(path)
    with pytest.raises(DamagedCheckpointError) as info:
        c.artifact("config", RunConfig.from_dict)
    assert str(info.value).startswith(f"checkpoint file {path / 'config.json'} is damaged (a RunConfig must be a JSON "
                                      "object of its fields, got [])")
    with pytest.raises(DamagedCheckpointError, match=re.escape(f"{path / 'tokenizer.json'} is damaged (not a "
                                                               "workbench tokenizer")):
        c.artifact("tokenizer", tokenizer_from_dict)


def test_the_cuda_rng_state_is_this_processs_device_only(monkeypatch):
    """A checkpoint keeps the CUDA generator of the device the process trains on (under torchrun rank 0's,
    which every rank's equals), and each process restores it on its own device; a checkpoint written with
    every device's state as rank 0 saw them ("rng.cuda.<i>") restores rank 0's own (device 0's: the others
    it never used). A run that never started CUDA neither saves nor starts it."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": calls.append(int(state[0])))
    saved = ckpt.rng_tensors()
    assert saved["rng.cuda"].tolist() == [7] and not [k for k in saved if k.startswith("rng.cuda.")]
    ckpt.restore_rng(saved)
    older = {"rng.torch": torch.get_rng_state(),
             **{f"rng.cuda.{i}": torch.tensor([i], dtype=torch.uint8) for i in (0, 1, 10, 2)}}
    ckpt.restore_rng(older)
    assert calls == [7, 0]
    ckpt.restore_rng({"rng.torch": torch.get_rng_state()})  # a CPU run's checkpoint: no CUDA state set
    assert calls == [7, 0]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert "rng.cuda" not in ckpt.rng_tensors()
