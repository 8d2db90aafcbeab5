"""The notebooks: committed clean and thin, validated parameters, and (smoke profile) the
metrics they write after a real papermill run."""

import json
import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from workbench import notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_the_ordered_notebooks_exist():
    names = [p.stem for p in ALL]
    assert names[:2] == ["01_attention", "02_pretraining"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_thin(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code), "strip outputs before committing"
    assert not any(re.search(r"^\s*(def|class)\s", c.source, re.M) for c in code), "move functions into workbench/"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    for line in params[0].source.splitlines():  # literals only
        assert re.match(r"^\w+ = (\".*\"|'.*'|-?[\d.]+|True|False|None)\s*(#.*)?$", line), line
    assert "profile" in params[0].source and "run_dir" in params[0].source
    first_code_after_params = code[code.index(params[0]) + 1]
    assert "notebook.start(" in first_code_after_params.source, "validate parameters in the first cell"
    assert all(len(c.source.splitlines()) <= 16 for c in code), "keep cells short"


# ------------------------------------------------------------------ parameter checks
def test_start_rejects_an_unknown_profile(tmp_path):
    with pytest.raises(ValueError, match=r"profile='huge'.*set profile = \"smoke\""):
        notebook.start("02_pretraining", profile="huge", run_dir=str(tmp_path))


def test_start_rejects_wrong_types(tmp_path):
    with pytest.raises(TypeError, match=r"parameter profile must be str, got int 3"):
        notebook.start("02_pretraining", profile=3, run_dir=str(tmp_path))
    with pytest.raises(TypeError, match=r"parameter probe_text must be str.*set e.g. probe_text ="):
        notebook.start("02_pretraining", profile="smoke", run_dir=str(tmp_path), probe_text=(5, str, '"x"'))


def test_start_names_the_notebook_that_makes_a_missing_artifact(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run notebooks/02_pretraining.ipynb first"):
        notebook.start("03_finetuning", profile="smoke", run_dir=str(tmp_path),
                       requires={"pretrain/model": "02_pretraining"})


def test_start_refuses_to_overwrite_an_earlier_run(tmp_path):
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="set run_dir to a new folder"):
        notebook.start("02_pretraining", profile="smoke", run_dir=str(tmp_path), outputs=("pretrain",))
    assert (tmp_path / "pretrain" / "keep.txt").read_text() == "x"


@pytest.mark.slow
def test_a_bad_parameter_stops_the_notebook_at_its_first_cell(tmp_path):
    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOKS / "02_pretraining.ipynb"), str(out), cwd=str(NOTEBOOKS),
                            parameters={"profile": "huge", "run_dir": str(tmp_path / "run")},
                            kernel_name="python3", execution_timeout=120, progress_bar=False)
    assert err.value.ename == "ValueError" and "profile='huge'" in err.value.evalue
    executed = nbformat.read(out, as_version=4)
    failed = [c for c in executed.cells if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.outputs)]
    assert len(failed) == 1 and "notebook.start(" in failed[0].source
    assert not (tmp_path / "run" / "pretrain").exists()


# ------------------------------------------------------------------ smoke runs
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Both notebooks executed in order with profile=smoke, sharing one run_dir."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    for path in ALL[:2]:
        pm.execute_notebook(str(path), str(run_dir.parent / path.name), cwd=str(NOTEBOOKS),
                            parameters={"profile": "smoke", "run_dir": str(run_dir)},
                            kernel_name="python3", execution_timeout=300, progress_bar=False)
    return run_dir


def metrics(run_dir, name):
    return json.loads((run_dir / "metrics" / f"{name}.json").read_text())


@pytest.mark.slow
def test_01_attention_smoke_metrics(smoke_run):
    m = metrics(smoke_run, "01_attention")
    assert m["minilm_layers"] == 6 and m["minilm_heads"] == 12
    assert m["char_tokens"] == len("To be, or not to be, that is the question")
    assert 0 < m["bpe_tokens"] < m["char_tokens"]
    assert 2.0 < m["bpe_chars_per_token_val"] < 4.0
    assert m["walkthrough_rows_sum_to_one"] is True
    assert 0 <= m["gpt_max_prev_token"] <= 1 and m["gpt_mean_entropy"] > 0
    assert m["gpt_source"].endswith("attention_gpt")  # run alone first, it trains its own GPT


@pytest.mark.slow
def test_02_pretraining_smoke_metrics(smoke_run):
    m = metrics(smoke_run, "02_pretraining")
    import math
    assert m["val_loss"] < math.log(m["vocab_size"])  # learned something beyond uniform guessing
    assert m["vocab_size"] == 512
    assert len(m["sweep_params"]) == 3 and m["sweep_params"] == sorted(m["sweep_params"])
    assert all(math.isfinite(v) for v in m["sweep_val_loss"])
    assert m["samples"] >= 2 and m["attention_snapshots"] >= 2
    assert m["estimated_train_s"] > 0 and m["tokens_per_s"] > 0
    assert (smoke_run / "pretrain" / "model" / "model.safetensors").exists()
