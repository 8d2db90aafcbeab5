"""Report runner: notebooks run in order with the injected parameters, report.json and index.html
record metrics and the environment, the HTML carries plotly.js inline, and a failing notebook stops
the run with one `error:` line while everything before it is kept.

Each kernel start costs a few seconds, so two module-scoped runs (one passing, one failing) feed
all the assertions."""

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from workbench.__main__ import main
from workbench.report import NotebookFailedError, describe_code, network_references, notebook_parameters, run_report

FIGURE = """import plotly.graph_objects as go, plotly.io as pio
pio.renderers.default = "plotly_mimetype+notebook"
go.Figure(go.Scatter(y=[1, 3, 2])).show()"""


def write_notebook(path: Path, *cells: str, parameters: str = "") -> Path:
    """A notebook with a `parameters` cell of literals (profile, run_dir, then `parameters`) followed by `cells`."""
    params = new_code_cell('profile = "default"\nrun_dir = "unset"\n' + parameters)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell(f"# {path.stem}"), params, *map(new_code_cell, cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def record_cell(stem: str) -> str:
    """Appends the notebook's name to run_dir/order.txt and writes run_dir/metrics/<stem>.json."""
    return f"""import json, os
from pathlib import Path
with open(Path(run_dir) / "order.txt", "a") as f:
    f.write("{stem}\\n")
(Path(run_dir) / "metrics").mkdir(exist_ok=True)
(Path(run_dir) / "metrics" / "{stem}.json").write_text(json.dumps(
    {{"profile": profile, "run_dir": run_dir, "cwd": os.getcwd(), "val_loss": 1.2345678,
      "cpu_bf16": os.environ.get("WORKBENCH_CPU_BF16")}}))"""


@pytest.fixture(scope="module")
def passing(tmp_path_factory):
    root = tmp_path_factory.mktemp("passing")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "02_second.ipynb", record_cell("02_second"), FIGURE)  # written first on purpose
    write_notebook(notebooks / "01_first.ipynb", record_cell("01_first"), FIGURE,
                   parameters='corpus = "shakespeare"\ntext_column = "text"')
    (root / "notes.txt").write_text("my own text\n")  # a plain-text corpus: no column to check
    report = run_report(notebooks, root / "out", profile="smoke", timeout=120,
                        parameters={"corpus": str(root / "notes.txt")})
    return notebooks, root / "out", report


def cpu_trains_in_bf16() -> bool:
    from workbench.train import uses_bf16

    return not torch.cuda.is_available() and uses_bf16(torch.device("cpu"), "auto")


def test_describe_machine_reads_both_peaks_where_there_are_two():
    from workbench.report import describe_machine

    fp32 = {"what": "fp32 matmul peak (cpu)", "tflops_before": 0.289, "tflops_after": 0.306}
    assert describe_machine(fp32) == "fp32 matmul peak (cpu) 0.289 TFLOP/s before, 0.306 after"
    both = {**fp32, "bf16_tflops_before": 1.12, "bf16_tflops_after": 0.98}
    assert describe_machine(both) == "fp32 matmul peak (cpu) 0.289 TFLOP/s before, 0.306 after; bf16 1.120 before, 0.980 after"
    assert describe_machine({**both, "tflops_after": None, "bf16_tflops_after": None}) == \
        "fp32 matmul peak (cpu) 0.289 TFLOP/s before; bf16 1.120 before"


def test_progress_names_each_notebook_with_times_and_what_is_left_and_no_kernel_noise(passing, capfd):
    notebooks, out, first = passing  # an earlier finished report of the same profile beside the new one
    lines = []
    run_report(notebooks, out.parent / "again", profile="smoke", timeout=120, progress=lines.append)
    took = {nb["name"]: nb["wall_s"] for nb in first["notebooks"]}
    # first the machine's matmul peak, measured then, which the report's times are read against (and
    # the bf16 one on a CPU where the notebooks train in bf16)
    bf16 = r", bf16 \d+\.\d{3} \(the notebooks train in bf16 here\)" if cpu_trains_in_bf16() else ""
    assert re.fullmatch(r"machine: (fp32|bf16) matmul peak \((cpu|cuda)\) \d+\.\d{3} TFLOP/s" + bf16 +
                        r" \(measured now; .*\)", lines.pop(0))
    # `out` read notes.txt, this one the plays: its times are a rough guide, and the line says why
    assert lines[0] == f"[1/2] 01_first ... (took {took['01_first.ipynb']:.0f} s in out, a report of other data)"
    assert re.fullmatch(r"\[1/2\] 01_first ok in \d+ s \(elapsed 0:\d\d, about 0:\d\d left\)", lines[1])
    assert lines[1].endswith(f"about 0:{int(took['02_second.ipynb']):02d} left)")
    assert lines[2].startswith("[2/2] 02_second ...") and re.fullmatch(r".* ok in \d+ s \(elapsed \d:\d\d\)", lines[3])
    assert "without encryption" not in capfd.readouterr().err  # the kernels' transport warning is gone
    # the new report's index compares it with that earlier one: the same notebooks, the same metrics
    assert json.loads((out.parent / "again" / "report.json").read_text())["compared_with"] == "out"
    index = (out.parent / "again" / "index.html").read_text(encoding="utf-8")
    assert "<h2>Compared with out</h2>" in index and "0 metrics changed, 10 the same" in index
    # ... but `out` read notes.txt and `again` the plays: said first, above the metrics
    note = "these reports used different data (corpus: notes.txt → shakespeare); their metrics are not comparable"
    assert index.index("<h2>Compared with out</h2>") < index.index(note) < index.index("0 metrics changed")
    assert "<p>Data: corpus shakespeare. Parameters: the notebooks' defaults.</p>" in index


def test_an_earlier_report_that_is_damaged_is_no_estimate(tmp_path):
    from workbench.report import _read_previous, previous_report

    def report(started, **nb):
        return {"profile": "smoke", "status": "ok", "started": started,
                "notebooks": [{"name": "01_a.ipynb", "wall_s": 12.5, "metrics": {}, **nb}]}

    for name, content in [("good", report("2026-01-01")),
                          ("newer_text", {**report("2027-01-01"), "notebooks": "01_a"}),
                          ("newer_list", report("2027-01-02", metrics=[1.0])),
                          ("newer_null", report("2027-01-03", parameters=None)),
                          ("newer_wall", report("2027-01-04", wall_s="12 s"))]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(content))
    (tmp_path / "newer_bytes").mkdir()
    (tmp_path / "newer_bytes" / "report.json").write_bytes(b"\xff\x00")
    # the newest readable report of the profile, without a traceback from the damaged newer ones
    name, times = previous_report(tmp_path / "new", "smoke")
    assert name == "newer_wall" and times == {}  # a report, but a wall time that is not a number is no estimate
    assert _read_previous(tmp_path / "newer_list") is None and _read_previous(tmp_path / "newer_null") is None
    assert _read_previous(tmp_path / "good")["started"] == "2026-01-01"
    (tmp_path / "newer_wall" / "report.json").unlink()
    assert previous_report(tmp_path / "new", "smoke") == ("good", {"01_a.ipynb": 12.5})


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    root = tmp_path_factory.mktemp("failing")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_ok.ipynb", record_cell("01_ok"))
    write_notebook(notebooks / "02_bad.ipynb", "x = 1", 'raise ValueError("bad thing")  # on purpose', "y = 2")
    write_notebook(notebooks / "03_never.ipynb", record_cell("03_never"))
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(["report", "--notebooks", str(notebooks), "--out", str(root / "out"), "--profile", "smoke",
                     "--timeout", "120"])
    return root / "out", code, stderr.getvalue()


# ------------------------------------------------------------------ a passing run
def test_notebooks_run_in_name_order_with_the_injected_parameters(passing):
    notebooks, out, report = passing
    assert (out / "run" / "order.txt").read_text().split() == ["01_first", "02_second"]
    assert [nb["name"] for nb in report["notebooks"]] == ["01_first.ipynb", "02_second.ipynb"]
    first, second = (nb["parameters"] for nb in report["notebooks"])
    assert first == {"profile": "smoke", "run_dir": str(out.resolve() / "run"), "corpus": str(out.parent / "notes.txt"),
                     "text_column": "text"}  # the one given, and the one left at its default
    assert second == {"profile": "smoke", "run_dir": str(out.resolve() / "run")}  # 02 has no corpus
    for nb in report["notebooks"]:
        assert nb["metrics"]["profile"] == "smoke"  # what the kernel saw, not what we passed
        assert nb["metrics"]["run_dir"] == str(out.resolve() / "run")
        assert Path(nb["metrics"]["cwd"]).resolve() == notebooks.resolve()


def test_every_kernel_trains_in_the_dtype_the_runner_decided(passing):
    """On a CPU the runner decides bf16 once (the speedup it times can sit near the threshold) and
    hands the decision to every notebook's kernel; with a GPU it leaves the kernels alone."""
    _, _, report = passing
    seen = {nb["metrics"]["cpu_bf16"] for nb in report["notebooks"]}
    if torch.cuda.is_available():
        assert seen == {None}
    else:
        assert seen == {"1" if cpu_trains_in_bf16() else "0"}
        assert ("bf16_tflops_before" in report["machine"]) == (seen == {"1"})


def test_report_json_holds_status_metrics_timing_and_environment(passing):
    _, out, report = passing
    assert json.loads((out / "report.json").read_text()) == report
    assert report["status"] == "ok" and report["error"] is None and report["profile"] == "smoke"
    assert report["wall_s"] >= sum(nb["wall_s"] for nb in report["notebooks"]) > 0
    assert all(nb["status"] == "ok" and nb["metrics"]["val_loss"] == 1.2345678 for nb in report["notebooks"])
    machine = report["machine"]  # the peak before the first notebook and after the last
    assert machine["tflops_before"] > 0 and machine["tflops_after"] > 0 and "matmul peak" in machine["what"]
    index = (out / "index.html").read_text(encoding="utf-8")
    assert f"TFLOP/s before, {machine['tflops_after']:.3f} after" in index
    if cpu_trains_in_bf16():  # its times follow the bf16 throughput: that peak is recorded too
        assert machine["bf16_tflops_before"] > 0 and machine["bf16_tflops_after"] > 0
        assert f"; bf16 {machine['bf16_tflops_before']:.3f} before, {machine['bf16_tflops_after']:.3f} after" in index
    else:
        assert "bf16_tflops_before" not in machine
    env = report["environment"]
    assert set(env) >= {"python", "torch", "numpy", "plotly", "papermill", "platform", "cpu_count",
                        "torch_threads", "device"}
    assert env["device"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    assert all(env[k] for k in ("python", "torch", "numpy", "plotly", "papermill"))


def test_report_json_is_strict_json_and_leaves_no_temp_file(passing, tmp_path):
    from workbench.report import _write_report

    _, _, report = passing
    measured_nothing = json.loads(json.dumps(report))
    measured_nothing["machine"]["tflops_after"] = float("nan")  # json.dumps alone would write NaN, not JSON
    _write_report(tmp_path, measured_nothing)
    written = json.loads((tmp_path / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert written["machine"]["tflops_after"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "report.json"]


def test_report_json_says_what_produced_it(passing):
    from dataclasses import asdict

    from workbench.profiles import get_profile

    _, out, report = passing
    assert report["code"] == describe_code()  # this checkout's revision, as a report run here records it
    assert len(report["code"]["revision"]) == 40
    # the profile's settings as it defines them (its corpus is the plays), and beside them the parameters
    # given, which the notebooks read their data from: no `settings` that claim the plays were read
    assert "settings" not in report
    assert report["profile_defaults"] == json.loads(json.dumps(asdict(get_profile("smoke")), default=str))
    assert report["profile_defaults"]["pretraining"]["run"]["data"]["corpus"] == "shakespeare"
    assert report["parameters"] == {"corpus": str(out.parent / "notes.txt")}
    assert report["profile_defaults"]["finetuning"]["seeds"] == [0] and report["seed"] == 1337
    index = (out / "index.html").read_text(encoding="utf-8")
    assert f"code {report['code']['revision'][:12]}" in index


def test_every_parameter_of_a_notebook_is_recorded_with_its_default():
    params = notebook_parameters(Path(__file__).resolve().parent.parent / "notebooks" / "01_attention.ipynb")
    assert params == {"profile": "default", "run_dir": "../runs/notebooks", "corpus": "shakespeare",
                      "text_column": "text", "text": "To be, or not to be, that is the question"}


def test_describe_code_gives_the_revision_and_uncommitted_changes_or_none(tmp_path):
    import subprocess

    assert describe_code(tmp_path) == {"revision": None, "uncommitted_changes": None}  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "model.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "model.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert describe_code(tmp_path) == {"revision": head, "uncommitted_changes": False}
    (tmp_path / "model.py").write_text("x = 2\n")
    assert describe_code(tmp_path) == {"revision": head, "uncommitted_changes": True}


def test_executed_notebooks_and_html_are_written(passing):
    _, out, report = passing
    for nb in report["notebooks"]:
        executed = nbformat.read(out / nb["ipynb"], as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
        assert (out / nb["html"]).stat().st_size > 1_000_000  # plotly.js is inline


def test_html_carries_plotly_inline_and_references_no_network(passing):
    _, out, report = passing
    page = (out / report["notebooks"][0]["html"]).read_text(encoding="utf-8")
    assert "plotly.js v" in page  # the bundle's banner comment
    assert "Plotly.newPlot" in page
    scripts = re.findall(r"<script\b[^>]*\bsrc=[\"']([^\"']+)[\"'][^>]*>", page)
    assert not [s for s in scripts if "plotly" in s.lower()], scripts
    for nb in report["notebooks"]:  # no require.js, MathJax, mermaid or widget manager from a CDN
        assert network_references((out / nb["html"]).read_text(encoding="utf-8")) == [], nb["html"]


def test_network_references_finds_what_a_page_would_fetch():
    would_fetch = ['<script defer src="https://cdnjs.example/require.min.js"></script>',
                   '<link rel="stylesheet" href="//fonts.example/css">', "<style>@import url(https://f.example/a.css);</style>",
                   '<div style="background: url(\'http://x.example/a.png\')">', 'await import("https://cdn.example/mermaid.mjs")',
                   "var widgetRendererSrc = 'https://unpkg.example/embed-amd.js';"]
    for snippet in would_fetch:
        assert len(network_references(f"<html><body>{snippet}</body></html>")) == 1, snippet
    reader_links_and_plotly = ('<a href="https://plotly.com/">plotly</a><svg xmlns="http://www.w3.org/2000/svg"></svg>'
                               '<script>/**\n* plotly.js v4.1.1\n*/ var tiles = "url(https://tiles.example/{z})";</script>')
    assert network_references(reader_links_and_plotly) == []


def test_index_html_links_every_notebook_with_its_metrics(passing):
    _, out, report = passing
    index = (out / "index.html").read_text(encoding="utf-8")
    for nb in report["notebooks"]:
        assert f'href="{nb["html"]}"' in index
    assert "val_loss 1.235" in index and "smoke" in index
    assert "<script" not in index


def test_index_html_says_which_data_the_notebooks_read_above_the_table(passing):
    _, out, _ = passing
    index = (out / "index.html").read_text(encoding="utf-8")
    notes = out.parent / "notes.txt"
    top = (f"<p>Data: corpus {notes}. Parameters given: <code>-p corpus {notes}</code>, each to the notebooks "
           "that have it; the rest are the notebooks' defaults.</p>")  # plain text: no text_column
    assert top in index and index.index(top) < index.index("<table")
    first, second = re.findall(r'<tr class="ok">.*?</tr>', index)
    assert f"<td>corpus {notes}</td>" in first and "<td></td>" in second  # 02 has no corpus parameter


def test_an_index_of_tables_names_their_columns():
    from workbench.report import _describe_data

    def report(**params):
        return {"notebooks": [{"name": "01_a.ipynb", "parameters": {"corpus": "shakespeare", "text_column": "text",
                                                                    **params}},
                              {"name": "03_b.ipynb", "parameters": {"classification_task": "/d/topics.csv",
                                                                    "text_col": "sentence", "label_col": "topic"}}]}

    assert _describe_data(report()) == ("corpus shakespeare, "  # the plays have no columns to name
                                        "classification_task /d/topics.csv (text_col sentence, label_col topic)")
    assert _describe_data(report(corpus="/d/my.csv", text_column="body")).startswith("corpus /d/my.csv (text_column body), ")
    dates = report(translation_task="dates", source_col="source", target_col="target", locales="en,de")
    assert _describe_data(dates).endswith(", translation_task dates (locales en,de)")  # a date task's locales


# ------------------------------------------------------------------ a failing run
def test_a_failing_notebook_ends_the_cli_with_one_error_line(failing):
    out, code, stderr = failing
    assert code == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "02_bad.ipynb" in errors[0]
    # the index counts the source notebook's cells (markdown, parameters, x = 1, raise), not papermill's
    assert 'cell 3 (`raise ValueError("bad thing")  # on purpose`)' in errors[0]
    assert "ValueError: bad thing" in errors[0]
    assert "Traceback" not in stderr


def test_a_failing_notebook_stops_the_run_and_keeps_what_came_before(failing):
    out, _, _ = failing
    assert (out / "run" / "order.txt").read_text().split() == ["01_ok"]  # 03 never ran
    assert (out / "01_ok.ipynb").exists() and (out / "01_ok.html").exists()
    assert (out / "run" / "metrics" / "01_ok.json").exists()
    assert not (out / "03_never.ipynb").exists()
    assert "bad thing" in (out / "02_bad.html").read_text(encoding="utf-8")  # the traceback, for the reader
    executed = nbformat.read(out / "02_bad.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in executed.cells for o in c.get("outputs", []))


def test_a_failing_notebook_is_recorded_in_report_json_and_index(failing):
    out, _, _ = failing
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and "02_bad.ipynb" in report["error"]
    assert [nb["status"] for nb in report["notebooks"]] == ["ok", "failed", "not run"]
    assert "ValueError: bad thing" in report["notebooks"][1]["error"]
    assert report["notebooks"][0]["metrics"]["profile"] == "smoke"
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "failed" in index and 'href="02_bad.html"' in index and 'href="03_never.html"' not in index


def test_a_cell_that_runs_past_the_timeout_fails_the_notebook(tmp_path):
    write_notebook(tmp_path / "01_slow.ipynb", "x = 1", "import time\ntime.sleep(60)", "y = 2")
    with pytest.raises(NotebookFailedError, match=r"01_slow.ipynb failed at cell 3 \(`import time`\): "
                       r"CellTimeoutError: .*pass a larger --timeout") as failure:
        run_report(tmp_path, tmp_path / "out", profile="smoke", timeout=2)
    assert failure.value.report["notebooks"][0]["status"] == "failed"
    assert (tmp_path / "out" / "01_slow.html").exists()


def test_a_kernel_that_dies_fails_the_notebook_and_keeps_its_partial_page(tmp_path):
    write_notebook(tmp_path / "01_dies.ipynb", "x = 1", "import os\nos._exit(1)  # as the OOM killer would", "y = 2")
    with pytest.raises(NotebookFailedError, match=r"01_dies.ipynb failed at cell 3 \(`import os`\): DeadKernelError"):
        run_report(tmp_path, tmp_path / "out", profile="smoke", timeout=60)
    executed = nbformat.read(tmp_path / "out" / "01_dies.ipynb", as_version=4)
    ran = {c.source: c.execution_count for c in executed.cells if c.cell_type == "code"}
    assert ran["x = 1"] is not None and ran["y = 2"] is None  # written up to where the kernel died
    assert (tmp_path / "out" / "01_dies.html").exists()


def test_the_executed_notebook_is_written_when_it_ends_not_at_every_cell(tmp_path, monkeypatch):
    import papermill.engines

    writes = []
    original = papermill.engines.write_ipynb
    monkeypatch.setattr(papermill.engines, "write_ipynb", lambda nb, path: (writes.append(path), original(nb, path)))
    write_notebook(tmp_path / "01_cells.ipynb", *[f"x{i} = {i}" for i in range(6)])
    run_report(tmp_path, tmp_path / "out", profile="smoke", timeout=60)
    assert writes == [str(tmp_path / "out" / "01_cells.ipynb")]  # papermill's default: 1 + 2 per cell = 15
    executed = nbformat.read(tmp_path / "out" / "01_cells.ipynb", as_version=4)
    assert [c.execution_count for c in executed.cells if c.cell_type == "code"][-1] == 8


# ------------------------------------------------------------------ input checks (no kernel)
def test_bad_arguments_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --notebooks"):
        run_report(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="no .ipynb files"):
        run_report(tmp_path, tmp_path / "out")
    write_notebook(tmp_path / "01_x.ipynb")
    with pytest.raises(ValueError, match="choose one of smoke, default, full"):
        run_report(tmp_path, tmp_path / "out", profile="huge")
    with pytest.raises(ValueError, match="set by the runner"):
        run_report(tmp_path, tmp_path / "out", parameters={"run_dir": "x"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds files"):
        run_report(tmp_path, tmp_path / "out")


@pytest.fixture
def tables(tmp_path):
    """The user's files: a corpus table, a classification table and a TSV of pairs, none with the default columns."""
    (tmp_path / "my.csv").write_text("body,id\nTo be or not\n")
    (tmp_path / "topics.csv").write_text("sentence,topic\nI like it,pos\n")
    (tmp_path / "numbers.tsv").write_text("words\tdigits\none\t1\n")
    (tmp_path / "pairs.jsonl").write_text('{"en": "one"}\n{"en": "two", "fr": "deux"}\n')  # fr only in line 2
    (tmp_path / "notes").mkdir()
    return tmp_path


# a notebook's parameters after its defaults, as run_report hands them to check_data_parameters
CORPUS = {"corpus": "shakespeare", "text_column": "text"}
CLASSIFICATION = {"classification_task": "genre", "text_col": "text", "label_col": "label"}
TRANSLATION = {"translation_task": "dates", "source_col": "source", "target_col": "target"}


def test_data_parameters_that_name_existing_data_pass(tables):
    from workbench.report import check_data_parameters

    check_data_parameters([CORPUS, CLASSIFICATION, TRANSLATION])  # the built-in data
    given = {"corpus": "my.csv", "text_column": "body", "classification_task": "topics.csv", "text_col": "sentence",
             "label_col": "topic", "translation_task": "numbers.tsv", "source_col": "words", "target_col": "digits"}
    notebooks = [{**params, **{k: v for k, v in given.items() if k in params}}
                 for params in (CORPUS, CORPUS, CLASSIFICATION, TRANSLATION)]
    check_data_parameters(notebooks, tables, given=given)  # relative paths are read from the notebooks' folder
    check_data_parameters([{**CORPUS, "corpus": str(tables / "notes")}])  # plain text: no text_column to check
    check_data_parameters([{**TRANSLATION, "translation_task": "pairs.jsonl", "source_col": "en", "target_col": "fr"}],
                          tables)  # a JSONL's columns are the keys of all its lines
    check_data_parameters([CORPUS, CLASSIFICATION, {**TRANSLATION, "locales": "en, de"}], tables,
                          given={"locales"})  # the notebooks without a locales parameter have none to check


@pytest.mark.parametrize("params, given, error", [
    ({**CORPUS, "corpus": "my.cvs"}, {"corpus"},
     r"corpus 'my.cvs' not found \(neither .*my.cvs nor, from the notebooks' folder, .*my.cvs exists\); pass -p corpus "
     r"FILE with a text file, .*, or -p corpus shakespeare"),
    ({**CORPUS, "corpus": "my.csv"}, {"corpus"},  # text_column left at "text"
     r"corpus .*my.csv has no column 'text' \(columns: body, id\); pass -p text_column COLUMN naming one of them"),
    ({**CLASSIFICATION, "classification_task": "topics.csv", "text_col": "sentence", "label_col": "label"},
     {"classification_task", "text_col", "label_col"},
     r"classification_task .*topics.csv has no column 'label' \(columns: sentence, topic\); pass -p label_col COLUMN"),
    ({**CLASSIFICATION, "classification_task": "notes"}, {"classification_task"},
     r"classification_task 'notes' is not a .csv, .tsv or .jsonl file; pass -p classification_task FILE .* or -p "
     r"classification_task genre"),
    ({**TRANSLATION, "translation_task": "numbers.tsv"}, {"translation_task"},  # source_col/target_col left as they were
     r"translation_task .*numbers.tsv has no column 'source', 'target' \(columns: words, digits\); "
     r"pass -p source_col COLUMN -p target_col COLUMN naming the right ones"),
    ({**TRANSLATION, "source_col": "words", "target_col": "digits"}, {"source_col", "target_col"},  # translation_task forgotten
     r"-p source_col words -p target_col digits name columns of a table, but translation_task is 'dates', built in: "
     r"pass -p translation_task FILE with your table, or drop -p source_col and -p target_col"),
    ({**TRANSLATION, "translation_task": "numbers.tsv", "source_col": "words", "target_col": "digits",
      "locales": "en,de"}, {"translation_task", "source_col", "target_col", "locales"},
     r"^-p locales en,de chooses the date task's locales, but translation_task is a file of pairs \(numbers.tsv\): "
     r"drop -p locales"),
    ({**TRANSLATION, "locales": "en,xx"}, {"locales"},
     r"^-p locales en,xx: locale 'xx' is unknown to babel; use a CLDR code such as en, fr"),
    ({**CORPUS, "corpus": "notes", "text_column": "body"}, {"corpus", "text_column"},
     r"^-p text_column body names a column, but corpus notes is plain text \(a file or folder\): drop -p text_column"),
])
def test_a_data_parameter_that_names_no_data_is_one_line_naming_the_parameter(tables, params, given, error):
    from workbench.report import check_data_parameters

    with pytest.raises((ValueError, FileNotFoundError), match=error) as failure:
        check_data_parameters([params], tables, given=given)
    assert "\n" not in str(failure.value) and "--" not in str(failure.value)  # -p NAME VALUE, not a training flag


def test_a_bad_data_parameter_stops_the_report_before_anything_runs_or_is_written(tables, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    notebooks = tables / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_corpus.ipynb", parameters='corpus = "shakespeare"\ntext_column = "text"')
    write_notebook(notebooks / "03_task.ipynb", parameters='classification_task = "genre"\ntext_col = "text"\n'
                                                           'label_col = "label"')
    given = {"corpus": str(tables / "my.csv"), "text_column": "body", "classification_task": str(tables / "topics.csv"),
             "text_col": "sentence", "label_col": "label"}
    with pytest.raises(ValueError, match=r"classification_task .*topics.csv has no column 'label'.*-p label_col"):
        run_report(notebooks, tables / "out", profile="smoke", parameters=given)
    assert not (tables / "out").exists()


def test_cli_names_the_parameter_of_a_table_without_its_columns_before_any_notebook(tables, capsys, monkeypatch):
    """The repository's own notebooks, as a user calls them: 05 would have failed minutes in."""
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    code = main(["report", "--out", str(tables / "out"), "-p", "translation_task", str(tables / "numbers.tsv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"error: translation_task {tables / 'numbers.tsv'} has no column 'source', 'target' "
                                 "(columns: words, digits); pass -p source_col COLUMN -p target_col COLUMN naming "
                                 "the right ones")
    assert not (tables / "out").exists()


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["report", "--notebooks", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: notebook folder")
