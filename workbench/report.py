"""Report runner: execute the notebooks in order with papermill and publish them as HTML.

`run_report(notebooks_dir, out_dir, profile)` runs every `NN_topic.ipynb` in name order with the
parameters `profile` and `run_dir` (= `<out_dir>/run`; notebooks hand artifacts to each other
there), then writes into `out_dir`:

    01_attention.ipynb, 01_attention.html, ...   executed notebooks and self-contained HTML
    run/                                         artifacts; run/metrics/<stem>.json from each notebook
    report.json                                  per notebook: status, wall_s, every parameter it ran
                                                 with (its parameters cell, then the injected ones),
                                                 metrics; plus the parameters given (`parameters`), the
                                                 profile, its settings as the profile defines them
                                                 (`profile_defaults`: the data the notebooks read is
                                                 their parameters', not these settings') and the seed,
                                                 the environment, the workbench's code revision and
                                                 whether its tree had uncommitted changes, total wall time,
                                                 and the machine's matmul peak before and after
                                                 (`matmul_peak`, and `cpu_bf16_peak` where a CPU
                                                 trains in bf16: times compare only between
                                                 machines of similar peaks)
    index.html                                   a table linking the notebooks, with the parameters each
                                                 was given and headline metrics, and what changed since
                                                 the previous report of the profile, first of all whether
                                                 it read other data (`workbench.report_diff`, also
                                                 `python -m workbench compare`)

Before anything is written or run, `check_data_parameters` checks the data the notebooks were given
(a corpus, a classification or translation task: the file exists, a table has the named columns),
so a typo fails in one line at once rather than when its notebook starts, minutes in.

A failing notebook stops the run: its partial notebook and HTML (with the traceback) are still
written, earlier outputs are kept, report.json records status "failed", and `NotebookFailedError`
names the notebook, the cell and the error.

papermill runs each notebook with a `_SparseSaves` manager: the executed notebook is written when
it ends (whether it succeeded, raised or timed out) and at most every 30 s while it runs, not before
and after every cell as papermill does by default. An executed notebook holds 5-16 MB (plotly.js, the
figures), a write takes ~0.2 s, and the per-cell writes cost 20 s of the default report.

The HTML works offline and references nothing on the network (`network_references` finds what
would): figures are drawn by plotly's `plotly_mimetype+notebook` renderer, which inlines plotly.js
in the notebook. nbconvert's lab template would load require.js, MathJax, mermaid and the ipywidgets
HTML manager from CDNs; `export_html` drops all four:

- Maths: the `$...$` and `$$...$$` of markdown cells become MathML (`latex2mathml`, pure Python),
  which Chromium (109+) and Firefox render natively. A MathJax copy inlined instead would add about
  1-2 MB of script and fonts to every page and typeset only after its script ran; MathML adds a few
  kB, shows as soon as the page is parsed and keeps the formulas as text a reader can copy. The
  formulas here (fractions, roots, scripts, stretchy brackets) are MathML Core's own ground; TeX the
  converter cannot read is shown as code, with a warning.
- Widgets: a static view of an ipywidget needs the HTML manager's script, which no installed package
  ships; its place says to open the notebook in JupyterLab, and every widget view in the notebooks
  has a static figure beside it. The saved widget state (megabytes nothing can render) is left out.
- require.js and mermaid: nothing in the notebooks uses them.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import html
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Callable, Collection

from .notebook import DEFAULT_SEED
from .profiles import get_profile
from .report_diff import DATA_PARAMETERS, data_differences

DEFAULT_TIMEOUT_S = 1800  # per cell; pretraining on 2 CPU cores takes minutes in one cell
NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
PAPERMILL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}  # cells papermill adds
WIDGET_NOTE = "(an interactive widget: run the notebook in JupyterLab to use it)"

# nbconvert's lab template without its CDN scripts (require.js, MathJax, mermaid, the widget manager)
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}
<style>math[display="block"] { margin: 1em 0; font-size: 1.15em; } math { font-size: 1.1em; }</style>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""
# plotly's HTML renderers put a synchronous MathJax <script src> from a CDN before every figure.
_REMOTE_MATHJAX = re.compile(r"<script[^>]*\ssrc=\"https?://[^\"]*mathjax[^\"]*\"[^>]*>\s*</script>",
                             re.IGNORECASE)


class NotebookFailedError(RuntimeError):
    """A notebook raised (or timed out); `report` is the report dict as written to report.json."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@functools.lru_cache(maxsize=None)
def _report_engine() -> str:
    """papermill's nbclient engine with a `_SparseSaves` manager, registered (once) as "workbench"."""
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    class _SparseSaves(NotebookExecutionManager):
        """Writes the notebook when the run ends and at most every `autosave_cell_every` seconds before."""

        ended = False

        def save(self, **kwargs):  # papermill calls it as each cell starts and ends, and on cell output
            if self.ended or (self.now() - self.last_save_time).total_seconds() >= self.autosave_cell_every:
                super().save(**kwargs)

        def notebook_complete(self, **kwargs):  # papermill's engine calls it in a `finally`; it ends with a save
            self.ended = True
            super().notebook_complete(**kwargs)

    class ReportEngine(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                             autosave_cell_every=30, **kwargs):
            # papermill's Engine.execute_notebook, with the manager above
            nb_man = _SparseSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                                  autosave_cell_every=autosave_cell_every)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register("workbench", ReportEngine)
    return "workbench"


def export_html(ipynb_path: str | Path, html_path: str | Path) -> Path:
    """Write a self-contained HTML page of an (executed) notebook: maths as MathML, no network use.

    Args:
        ipynb_path: the notebook to convert.
        html_path: where to write the page.
    Returns:
        `html_path` as a Path.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(ipynb_path), as_version=4)
    nb.metadata.pop("widgets", None)  # the saved widget state: nothing offline can render it
    formulas: dict[str, str] = {}  # placeholder -> MathML, put in after markdown has been rendered
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _replace_math(cell.source, formulas)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                output["data"] = {"text/plain": WIDGET_NOTE}  # not the widget's repr, "IntSlider(value=3)"
            if "text/html" in data:
                text = data["text/html"]
                text = "".join(text) if isinstance(text, list) else text
                data["text/html"] = _REMOTE_MATHJAX.sub("", text)
    exporter = HTMLExporter(template_name="lab", template_file="workbench_report.html.j2",
                            extra_loaders=[jinja2.DictLoader({"workbench_report.html.j2": _TEMPLATE})])
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": Path(ipynb_path).stem}})
    for placeholder, mathml in formulas.items():
        body = body.replace(placeholder, mathml)
    html_path = Path(html_path)
    html_path.write_text(body, encoding="utf-8")
    return html_path


# Markdown maths, found outside code spans and fences (_CODE): an escaped \$ is text; inline $...$
# opens before a non-space and closes after one, not before a digit ("$5 and $10" is no formula).
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)
_MATH = re.compile(r"(?P<escaped>\\\$)|\$\$(?P<display>.+?)\$\$|\$(?=\S)(?P<inline>[^$\n]+?)(?<=\S)\$(?!\d)",
                   re.DOTALL)


def _replace_math(markdown: str, formulas: dict[str, str]) -> str:
    """Replace each formula of a markdown cell with a plain-text placeholder (markdown leaves it alone)
    and keep its MathML in `formulas`, to be put in after nbconvert has rendered the markdown."""

    def placeholder(match: re.Match) -> str:
        if match["escaped"]:
            return match[0]
        display = match["display"] is not None
        key = f"WBMATH{len(formulas)}X"
        formulas[key] = latex_to_mathml(match["display"] if display else match["inline"], display=display)
        return key

    parts = _CODE.split(markdown)  # odd parts are code, kept as written
    return "".join(part if i % 2 else _MATH.sub(placeholder, part) for i, part in enumerate(parts))


def latex_to_mathml(tex: str, display: bool = False) -> str:
    """MathML for one TeX formula; TeX the converter cannot read comes back as escaped code, with a warning."""
    from latex2mathml.converter import convert

    try:
        mathml = convert(tex.strip(), display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises many kinds of errors for TeX it does not know
        warnings.warn(f"formula shown as TeX, not converted to MathML ({type(e).__name__}): {tex!r}", stacklevel=2)
        return f"<code>{html.escape(tex)}</code>"
    if re.search(r">\\[A-Za-z]", mathml):  # an unknown command is passed through as text
        warnings.warn(f"formula has a TeX command MathML cannot show: {tex!r}", stacklevel=2)
    return mathml


# What a page could fetch: src/href of a script, a stylesheet, an image or a frame; CSS @import and
# url(); a dynamic import() or a script URL assigned in code. (Links a reader clicks, <a href>, are fine.)
_NETWORK = re.compile(r"<(?:script|link|img|iframe|source|video|audio|embed)\b[^>]*?\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//"
                      r"|@import\s+(?:url\()?[\"']?(?:https?:)?//|url\(\s*[\"']?(?:https?:)?//"
                      r"|\bimport\(\s*[\"'](?:https?:)?//|Src\s*=\s*[\"'](?:https?:)?//", re.IGNORECASE)


def network_references(page: str) -> list[str]:
    """The places in an HTML page that would fetch something from the network (80 characters each).

    The scan skips the text of inline plotly.js bundles: their strings name map-tile and font servers
    that only geographic figures would ever ask for.
    """
    outside_plotly = re.sub(r"(<script[^>]*>)(?:(?!</script>).)*?/\*\*?\s*\*?\s*plotly\.js v.*?</script>",
                            r"\1</script>", page, flags=re.DOTALL)
    return [outside_plotly[m.start():m.start() + 80] for m in _NETWORK.finditer(outside_plotly)]


def run_report(notebooks_dir: str | Path | None, out_dir: str | Path, profile: str = "default",
               timeout: int = DEFAULT_TIMEOUT_S, parameters: dict | None = None,
               progress: Callable[[str], None] | None = None) -> dict:
    """Execute every notebook in `notebooks_dir` in name order and write the report into `out_dir`.

    Args:
        notebooks_dir: folder of `.ipynb` files; None means the repository's `notebooks/`.
        out_dir: report folder; created, and must be empty if it exists.
        profile: "smoke", "default" or "full", passed to every notebook as `profile`.
        timeout: seconds each cell may run before the notebook counts as failed.
        parameters: papermill parameters (besides profile and run_dir), each given to the notebooks
            whose parameters cell has it, e.g. {"corpus": "/data/mine.txt"}; a name no notebook has
            is refused.
        progress: called with one line as each notebook starts and ends (elapsed time and, when an
            earlier report of the same profile sits beside out_dir, an estimate of what is left).
    Returns:
        The report dict, as written to `out_dir/report.json`.
    Raises:
        NotebookFailedError: a notebook failed; the report (status "failed") is still written.
    """
    import papermill as pm

    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    notebooks = _find_notebooks(notebooks_dir)
    get_profile(profile)  # a one-line error for an unknown profile
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    clash = {"profile", "run_dir"} & set(parameters or {})
    if clash:
        raise ValueError(f"parameters {sorted(clash)} are set by the runner; pass profile= or out_dir= instead")
    declared = {nb: notebook_parameters(nb) for nb in notebooks}  # each notebook gets the parameters it declares
    known = {name for names in declared.values() for name in names}
    if unknown := sorted(set(parameters or {}) - known):
        raise ValueError(f"no notebook has a parameter {', '.join(unknown)}; the notebooks' parameters are "
                         f"{', '.join(sorted(known - {'profile', 'run_dir'}))}")
    check_data_parameters([{**declared[nb], **{k: v for k, v in (parameters or {}).items() if k in declared[nb]}}
                           for nb in notebooks], notebooks_dir, given=set(parameters or {}))
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file; choose a folder for the report")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} already holds files; choose a new or empty output folder")
    run_dir = out_dir / "run"
    run_dir.mkdir(parents=True)

    params = {"profile": profile, "run_dir": str(run_dir), **(parameters or {})}
    given = {nb: {k: v for k, v in params.items() if k in declared[nb]} for nb in notebooks}
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    report = {"status": "running", "profile": profile, "started": started, "wall_s": None,
              "run_dir": str(run_dir), "error": None, "code": describe_code(), "environment": describe_environment(),
              "seed": DEFAULT_SEED, "parameters": dict(parameters or {}),
              "profile_defaults": dataclasses.asdict(get_profile(profile)), "compared_with": None,
              "notebooks": [{"name": nb.name, "status": "not run", "wall_s": None,
                             "parameters": {**declared[nb], **given[nb]},
                             "metrics": {}, "html": nb.stem + ".html", "ipynb": nb.name} for nb in notebooks]}
    say = progress or (lambda line: None)
    what, peak = matmul_peak()
    report["machine"] = {"what": what, "tflops_before": peak, "tflops_after": None}
    bf16 = cpu_bf16_peak()
    if bf16 is not None:
        report["machine"] |= {"bf16_tflops_before": bf16, "bf16_tflops_after": None}
    say(f"machine: {what} {peak:.3f} TFLOP/s" + ("" if bf16 is None else f", bf16 {bf16:.3f} (the notebooks train "
        "in bf16 here)") + " (measured now; compare report times only between machines of similar peaks)")
    from .train import cpu_dtype_environ

    kernel_env = {"PYTHONHASHSEED": "0", **cpu_dtype_environ()}  # every notebook decides bf16 as this process did
    engine = _report_engine()
    t_run = time.perf_counter()
    earlier, earlier_times = previous_report(out_dir, profile)
    previous = _read_previous(out_dir.parent / earlier) if earlier else None  # read once: timed against, compared with
    # a report of other data may have taken quite another time: the line says so
    other = ", a report of other data" if previous is not None and data_differences(previous, report) else ""
    for i, (nb_path, entry) in enumerate(zip(notebooks, report["notebooks"]), start=1):
        expected = earlier_times.get(nb_path.name)
        took = f" (took {expected:.0f} s in {earlier}{other})" if expected else ""
        say(f"[{i}/{len(notebooks)}] {nb_path.stem} ...{took}")
        executed, t0, error = out_dir / nb_path.name, time.perf_counter(), None
        entry["status"] = "running"
        with _environ(**kernel_env):
            try:
                # the kernel's own log says nothing a reader can act on: transport warnings, and at ERROR a
                # "KeyboardInterrupt caught in kernel" when jupyter_client's shutdown interrupt lands in a
                # handler of a notebook that finished; a cell's error reaches the report through papermill
                pm.execute_notebook(str(nb_path), str(executed), parameters=given[nb_path], kernel_name="python3",
                                    engine_name=engine, cwd=str(notebooks_dir), execution_timeout=math.ceil(timeout),
                                    start_timeout=120, progress_bar=sys.stderr.isatty(),
                                    extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
            except Exception as e:  # PapermillExecutionError, a cell timeout, a dead kernel
                error = e
        entry["wall_s"] = round(time.perf_counter() - t0, 2)
        left = [earlier_times.get(nb.name) for nb in notebooks[i:]]
        estimate = f", about {_clock(sum(left))} left" if left and all(left) else ""
        say(f"[{i}/{len(notebooks)}] {nb_path.stem} {'failed' if error else 'ok'} in {entry['wall_s']:.0f} s "
            f"(elapsed {_clock(time.perf_counter() - t_run)}{estimate})")
        entry["metrics"] = _read_metrics(run_dir / "metrics" / f"{nb_path.stem}.json")
        page = export_html(executed, out_dir / entry["html"]) if executed.exists() else None
        if error is not None:
            entry["status"] = "failed"
            entry["error"] = _describe_failure(executed, error, timeout)
            report.update(status="failed", wall_s=round(time.perf_counter() - t_run, 2),
                          error=f"{nb_path.name} failed at {entry['error']}" + (f"; see {page}" if page else ""))
            _write_report(out_dir, report)
            raise NotebookFailedError(report["error"], report) from error
        entry["status"] = "ok"
        _write_report(out_dir, report)
    report.update(status="ok", wall_s=round(time.perf_counter() - t_run, 2), compared_with=earlier)
    report["machine"]["tflops_after"] = matmul_peak()[1]
    if bf16 is not None:
        report["machine"]["bf16_tflops_after"] = cpu_bf16_peak()
    _write_report(out_dir, report, previous=previous)
    return report


# what each data parameter takes besides its built-in name (DATA_PARAMETERS), for the messages
_DATA_FILES = {"corpus": "a text file, a folder of .txt/.md files or a .csv/.tsv/.jsonl table",
               "classification_task": "a .csv/.tsv/.jsonl table of texts and labels",
               "translation_task": "a .csv/.tsv/.jsonl table of pairs"}


def check_data_parameters(notebook_parameters: list[dict], folder: str | Path = ".",
                          given: Collection[str] = ()) -> None:
    """Check the data the notebooks would read, before any of them runs: each data parameter
    (`report_diff.DATA_PARAMETERS`: corpus, classification_task, translation_task) names its built-in
    data set or an existing file, and a table (.csv/.tsv/.jsonl) has the columns its column parameters
    name (a plain-text corpus, a file or a folder, has none). A column parameter given while its data
    is the built-in one is refused, as 05 refuses it: the built-in data has no columns to choose.

    The table is read whole with the library's reader (`data.read_table`): a JSONL's columns are the
    keys of all its lines, and a file it cannot parse fails here too, as it would in its notebook.

    Args:
        notebook_parameters: each notebook's parameters as it will run: its parameters cell's values
            updated with those given. Each data set is checked once, however many notebooks read it.
        folder: where the notebooks run; a relative path is read from there, as their kernels read it.
        given: the names of the parameters given (`-p NAME VALUE`), not left at their defaults.
    Raises:
        FileNotFoundError: a file that does not exist, in one line naming the `-p NAME VALUE` to fix.
        ValueError: a task that is not a table, a missing column or a column set for built-in data, likewise.
    """
    from .data import TABLE_FILES, read_table, require_columns
    from .translation import check_locales, parse_locales

    checks = []  # (name, value, {column parameter: column}), once each
    for params in notebook_parameters:
        for name, (_, columns) in DATA_PARAMETERS.items():
            if name in params:
                check = (name, params[name], {c: params.get(c, default) for c, default in columns.items()})
                if check not in checks:
                    checks.append(check)
    for params in notebook_parameters:  # 05 refuses them, as seq2seq-train refuses --locales with a file
        if "locales" in given and "locales" in params:  # (only 05 has it)
            task, locales = params.get("translation_task", "dates"), params["locales"]
            if str(task) != "dates":
                raise ValueError(f"-p locales {locales} chooses the date task's locales, but translation_task is a "
                                 f"file of pairs ({task}): drop -p locales (a locale column in the file gives "
                                 "per-locale scores)")
            try:
                check_locales(parse_locales(locales))
            except ValueError as e:
                raise ValueError(f"-p locales {locales}: {e}") from None
        corpus = Path(str(params.get("corpus", "shakespeare")))
        if "text_column" in given and str(corpus) != "shakespeare" and corpus.suffix.lower() not in TABLE_FILES:
            raise ValueError(f"-p text_column {params['text_column']} names a column, but corpus {corpus} is plain "
                             "text (a file or folder): drop -p text_column, or pass a .csv/.tsv/.jsonl corpus")
    for name, value, columns in checks:
        builtin, defaults = DATA_PARAMETERS[name]
        if str(value) == builtin:
            if named := [c for c, column in columns.items() if c in given and column != defaults[c]]:
                raise ValueError(f"{' '.join(f'-p {c} {columns[c]}' for c in named)} "
                                 f"{'names a column' if len(named) == 1 else 'name columns'} of a table, but {name} is "
                                 f"{builtin!r}, built in: pass -p {name} FILE with your table, or drop "
                                 + " and ".join(f"-p {c}" for c in named))
            continue
        path = (Path(folder) / Path(str(value)).expanduser()).resolve()  # an absolute value stays as it is
        if not path.exists():
            where = (f"{path} does not exist" if Path(str(value)).expanduser().is_absolute() else
                     f"neither {Path.cwd() / str(value)} nor, from the notebooks' folder, {path} exists")
            raise FileNotFoundError(f"{name} {value!r} not found ({where}); pass -p {name} FILE with "
                                    f"{_DATA_FILES[name]}, or -p {name} {builtin}")
        if name == "corpus" and (path.is_dir() or path.suffix.lower() not in TABLE_FILES):
            continue  # plain text: no columns
        if path.is_dir() or path.suffix.lower() not in TABLE_FILES:
            raise ValueError(f"{name} {value!r} is not a .csv, .tsv or .jsonl file; pass -p {name} FILE with "
                             f"{_DATA_FILES[name]} (save it as one), or -p {name} {builtin}")
        table = read_table(path)
        missing = [c for c, column in columns.items() if column not in table.columns]
        require_columns(table, [columns[c] for c in missing], name=f"{name} {path}",
                        fix="pass " + " ".join(f"-p {c} COLUMN" for c in missing) + " naming "
                            + ("one of them" if len(missing) == 1 else "the right ones"))


def matmul_peak() -> tuple[str, float]:
    """(what was measured, TFLOP/s): the matmul peak of the device the notebooks run on
    (`bench.peak_matmul_flops`; fp32 on a CPU, bf16 on a GPU). `run_report` records it before the
    first notebook and after the last.

    Machines of one kind differ (two 2-core CPUs measured 0.144 and 0.347 TFLOP/s fp32) and one
    machine drifts within minutes, so a report's times mean something only beside this figure.
    """
    import torch

    from .bench import peak_matmul_flops

    cuda = torch.cuda.is_available()
    device, dtype = torch.device("cuda" if cuda else "cpu"), torch.bfloat16 if cuda else torch.float32
    tflops = peak_matmul_flops(device, dtype) / 1e12
    return f"{'bf16' if cuda else 'fp32'} matmul peak ({device.type})", round(tflops, 3)


def cpu_bf16_peak() -> float | None:
    """The bf16 matmul peak (TFLOP/s) of a CPU on which the notebooks train under bf16 autocast
    (`train.uses_bf16`); None elsewhere. There a report's times follow the bf16 throughput, which on
    one VM swung 0.43-1.14 TFLOP/s within an hour while its fp32 peak stayed at 0.25-0.30."""
    import torch

    from .bench import peak_matmul_flops
    from .train import uses_bf16

    cpu = torch.device("cpu")
    if torch.cuda.is_available() or not uses_bf16(cpu, "auto"):
        return None
    return round(peak_matmul_flops(cpu, torch.bfloat16) / 1e12, 3)


def describe_machine(machine: dict) -> str:
    """A report's machine record as read: e.g. "fp32 matmul peak (cpu) 0.289 TFLOP/s before, 0.306 after"
    (and "; bf16 1.120 before, 0.980 after" where the notebooks trained in bf16 on a CPU)."""
    after = "" if machine.get("tflops_after") is None else f", {machine['tflops_after']:.3f} after"
    text = f"{machine['what']} {machine['tflops_before']:.3f} TFLOP/s before{after}"
    if machine.get("bf16_tflops_before") is not None:
        bf16_after = machine.get("bf16_tflops_after")
        text += f"; bf16 {machine['bf16_tflops_before']:.3f} before" + ("" if bf16_after is None else
                                                                       f", {bf16_after:.3f} after")
    return text


def previous_report(out_dir: Path, profile: str) -> tuple[str | None, dict[str, float]]:
    """The newest finished report of `profile` beside out_dir (e.g. reports/<timestamp>): its folder
    name and each notebook's wall time, for estimating what is left; (None, {}) when there is none."""
    candidates = []
    for path in out_dir.parent.glob("*/report.json"):
        if path.parent == out_dir:
            continue
        report = _read_previous(path.parent)
        if report is not None and report.get("profile") == profile and report.get("status") == "ok":
            candidates.append((str(report.get("started", "")), path.parent.name, report))
    if not candidates:
        return None, {}
    _, name, report = max(candidates, key=lambda c: c[0])
    return name, {nb["name"]: nb["wall_s"] for nb in report["notebooks"]
                  if isinstance(nb.get("wall_s"), (int, float)) and nb["wall_s"] > 0}


def _read_previous(folder: Path) -> dict | None:
    """An earlier report's report.json, or None when it is damaged or not a report (no estimate, no comparison)."""
    from .report_diff import load_report

    try:
        return load_report(folder)
    except (OSError, ValueError):
        return None


def notebook_parameters(path: Path) -> dict:
    """The literals of a notebook's `parameters` cell, e.g. {"profile": "default", "text": "To be"};
    a value that is not a literal is kept as its source text."""
    import papermill as pm

    params = {}
    for name, spec in pm.inspect_notebook(str(path)).items():
        try:
            params[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            params[name] = spec["default"]
    return params


def describe_code(root: str | Path | None = None) -> dict:
    """The git revision of `root` (default: the workbench's own checkout) and whether tracked files had
    uncommitted changes; None for both where it is not a git checkout (an installed wheel) or git is missing."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if revision else None
    return {"revision": revision, "uncommitted_changes": None if changes is None else bool(changes)}


def _clock(seconds: float) -> str:
    """m:ss"""
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def describe_environment() -> dict:
    """Versions, platform and compute the report ran on (saved into report.json)."""
    import torch

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": version("numpy"),
            "plotly": version("plotly"), "papermill": version("papermill"), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def _find_notebooks(notebooks_dir: Path) -> list[Path]:
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebook folder {notebooks_dir} not found; pass --notebooks DIR")
    notebooks = sorted(notebooks_dir.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"no .ipynb files in {notebooks_dir}; pass --notebooks DIR")
    return notebooks


@contextmanager
def _environ(**values: str):
    """Set environment variables for kernels started inside the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _read_metrics(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        warnings.warn(f"ignoring metrics in {path}: not valid JSON ({e})", stacklevel=2)
        return {}


def _describe_failure(executed: Path, error: Exception, timeout: float) -> str:
    """'cell 3 (`first line of source`): ValueError: message', on one line.

    The cell index counts the source notebook's cells (papermill's own inserted cells are skipped).
    """
    import nbformat

    ename = getattr(error, "ename", type(error).__name__)
    evalue = getattr(error, "evalue", str(error))
    if isinstance(error, TimeoutError):  # nbclient's CellTimeoutError quotes the whole cell; say the fix
        evalue = f"the cell ran longer than the {timeout} s timeout; pass a larger --timeout"
    where = "start-up"  # no cell ran: the kernel did not start
    if executed.exists():
        cells = [c for c in nbformat.read(str(executed), as_version=4).cells
                 if not PAPERMILL_TAGS & set(c.metadata.get("tags", []))]
        failed = [i for i, c in enumerate(cells) if any(o.output_type == "error" for o in c.get("outputs", []))]
        started = [i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("start_time")]
        index = failed[0] if failed else started[-1] if started else None  # timeouts leave no error output
        if index is not None:
            first_line = next((line.strip() for line in cells[index].source.splitlines() if line.strip()), "")
            where = f"cell {index} (`{first_line[:80]}`)"
    message = " ".join(f"{ename}: {evalue}".split())  # one line, whatever the exception text holds
    return f"{where}: {message[:500]}"


def _write_report(out_dir: Path, report: dict, previous: dict | None = None) -> None:
    from .checkpoint import write_json  # here, not at the top: checkpoint imports torch

    write_json(out_dir / "report.json", report)  # atomic: a report stopped mid-write keeps its last whole JSON
    comparison = ""
    if previous is not None:
        from .report_diff import compare_reports, comparison_html

        try:
            comparison = comparison_html(compare_reports(previous, json.loads((out_dir / "report.json").read_text()),
                                                         report["compared_with"], out_dir.name))
        except ValueError as e:  # e.g. no metric in common: say so rather than fail a finished report
            comparison = f"<p>Not compared with {html.escape(report['compared_with'])}: {html.escape(str(e))}</p>"
    (out_dir / "index.html").write_text(_index_html(report, comparison), encoding="utf-8")


def _headline(metrics: dict, limit: int = 8) -> str:
    """The first few numeric metrics as 'name value' pairs."""
    items = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        items.append(f"{key} {value:,.0f}" if abs(value) >= 1000 else f"{key} {value:.4g}")
        if len(items) == limit:
            break
    return ", ".join(items)


def _describe_data(report: dict) -> str:
    """What the notebooks read, e.g. "corpus /d/my.csv (text_column body), classification_task genre";
    a table's columns are named, those of built-in data or plain text are not (they have none)."""
    from .data import TABLE_FILES
    from .report_diff import data_parameters

    values = data_parameters(report)
    shown = {name: " / ".join(map(str, vs)) for name, vs in values.items()}
    parts = []
    for name, (_, columns) in DATA_PARAMETERS.items():
        if name in values:
            table = any(str(v).lower().endswith(TABLE_FILES) for v in values[name])
            named = [f"{c} {shown[c]}" for c in columns if c in shown and table]
            if name == "translation_task" and not table and "locales" in shown:  # the date task's locales
                named.append(f"locales {shown['locales']}")
            parts.append(f"{name} {shown[name]}" + (f" ({', '.join(named)})" if named else ""))
    return ", ".join(parts) or "none of the data parameters (corpus, classification_task, translation_task)"


def _index_html(report: dict, comparison: str = "") -> str:
    esc = html.escape
    given = report.get("parameters") or {}
    rows = []
    for nb in report["notebooks"]:
        wall = "" if nb["wall_s"] is None else f"{nb['wall_s']:.1f} s"
        name = (f'<a href="{esc(nb["html"])}">{esc(nb["name"])}</a>' if nb["status"] in ("ok", "failed")
                else esc(nb["name"]))
        params = ", ".join(f"{k} {v}" for k, v in nb.get("parameters", {}).items() if k in given)
        detail = esc(nb.get("error") or _headline(nb["metrics"]))
        rows.append(f'<tr class="{esc(nb["status"].replace(" ", "-"))}"><td>{name}</td><td>{esc(nb["status"])}</td>'
                    f'<td>{wall}</td><td>{esc(params)}</td><td>{detail}</td></tr>')
    parameters = "Parameters: the notebooks' defaults"
    if given:
        parameters = ("Parameters given: "
                      + " ".join(f"<code>-p {esc(k)} {esc(str(v))}</code>" for k, v in given.items())
                      + ", each to the notebooks that have it; the rest are the notebooks' defaults")
    env = ", ".join(f"{k} {v}" for k, v in report["environment"].items())
    code = report.get("code") or {}
    if code.get("revision"):
        env += f"; code {code['revision'][:12]}" + (" with uncommitted changes" if code["uncommitted_changes"] else "")
    total = "" if report["wall_s"] is None else f", {report['wall_s']:.0f} s in all"
    machine = report.get("machine")
    if machine:
        total += f" on a machine of {esc(describe_machine(machine))}"
    error = f'<p class="failed">{esc(report["error"])}</p>' if report["error"] else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LLM Workbench report {esc(report['started'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .4em .8em; text-align: left; }}
td:nth-child(-n+3) {{ white-space: nowrap; }}
.ok td:nth-child(2) {{ color: #1a7f37; }} .failed, .failed td:nth-child(2) {{ color: #c62828; }}
.not-run {{ color: #888; }} small {{ color: #666; }} .moved td {{ font-weight: bold; }}
.different-data {{ color: #c62828; }}
</style></head><body>
<h1>LLM Workbench report</h1>
<p>Profile <b>{esc(report['profile'])}</b>, started {esc(report['started'])}{total}: <b>{esc(report['status'])}</b></p>
<p>Data: {esc(_describe_data(report))}. {parameters}.</p>
{error}
<table><tr><th>notebook</th><th>status</th><th>wall time</th><th>parameters given</th><th>headline metrics</th></tr>
{chr(10).join(rows)}
</table>
{comparison}
<p><small>{esc(env)}. Artifacts in <code>run/</code>; everything in <code>report.json</code>.</small></p>
</body></html>
"""
