"""Checkpoint JSON: `write_json` writes strict JSON whatever numbers it is handed; a damaged checkpoint
file (truncated, garbage, missing) is one DamagedCheckpointError line naming it; `latest_checkpoint`
skips damaged step checkpoints.

(Saving, loading and resuming checkpoints are tested through the Trainer in test_train.py; damaged
checkpoints through the command line in test_cli.py.)"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from workbench import checkpoint as ckpt
from workbench.checkpoint import DamagedCheckpointError, json_safe, write_json


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


def test_latest_checkpoint_skips_damaged_step_checkpoints_with_a_warning(tmp_path):
    model = torch.nn.Linear(4, 3)
    gen = torch.Generator()
    for step in (4, 8, 12):
        ckpt.save_step(tmp_path, step, model, torch.optim.AdamW(model.parameters()), gen, {"step": step}, [])
    steps = ckpt.step_checkpoints(tmp_path)
    assert [p.name for p in steps] == ["step-0000012", "step-0000008"]  # mark_latest keeps two
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
