"""Checkpoint JSON: `write_json` writes strict JSON whatever numbers it is handed.

(Saving, loading and resuming checkpoints are tested through the Trainer in test_train.py.)"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.checkpoint import json_safe, write_json


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
