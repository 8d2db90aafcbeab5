"""Compare two reports: what moved between two runs of the notebooks, and what ran differently.

`python -m workbench compare REPORT_A REPORT_B` (and the "compared with" section of a new report's
index.html) reads each report's `report.json` and lists

- every headline metric side by side, with the difference B - A. A metric `X_mean` whose notebook
  also recorded `X_std` (the spread over seeds, e.g. 03's macro-F1 of each fine-tuning mode) is
  marked when it moved by more than the larger of the two spreads; a metric with no spread (a
  mode run with one seed records none) is only marked as changed. Timings (wall time, tokens/s) are listed apart: they
  differ between any two runs;
- metrics that only one report has;
- parameters and settings (the profile's, each notebook's) and environment (versions, device, code
  revision) that differ.

Reports whose notebooks read different data (`DATA_PARAMETERS`: another corpus, classification or
translation task, or other columns of them) are still compared, under one line at the top that says
so: their metrics measure different things. Only reports of one profile are compared: a smoke and a
default run differ in everything by design.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .translation import DATE_LOCALES, parse_locales

# metrics measured in seconds or per second (tokens, sentences, examples): they vary run to run and
# machine to machine
TIMING = ("wall_s", "train_s", "_per_s", "ms_per_iter_median")

# The notebooks' parameters that choose their data: each one's built-in data set, and the columns (with
# their defaults) that a table given instead must have. `report.check_data_parameters` checks them
# before a report runs; two reports that differ in them, or in 05's `locales`, read different data.
DATA_PARAMETERS = {"corpus": ("shakespeare", {"text_column": "text"}),
                   "classification_task": ("genre", {"text_col": "text", "label_col": "label"}),
                   "translation_task": ("dates", {"source_col": "source", "target_col": "target"})}
DATA_NAMES = tuple(n for name, (_, columns) in DATA_PARAMETERS.items() for n in (name, *columns)) + ("locales",)
# each data parameter's default: what a report written before its notebook had the parameter read
DATA_DEFAULTS = {**{name: builtin for name, (builtin, _) in DATA_PARAMETERS.items()},
                 **{c: d for _, columns in DATA_PARAMETERS.values() for c, d in columns.items()},
                 "locales": ",".join(DATE_LOCALES)}


@dataclass
class MetricRow:
    notebook: str
    metric: str
    a: Any
    b: Any
    spread: float | None = None  # the larger seed standard deviation of the two reports, if recorded

    @property
    def delta(self) -> float | None:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (self.a, self.b))
        return self.b - self.a if numbers else None

    @property
    def changed(self) -> bool:
        return self.a != self.b

    @property
    def beyond_spread(self) -> bool:
        return self.spread is not None and self.delta is not None and abs(self.delta) > self.spread

    @property
    def timing(self) -> bool:
        return self.metric.endswith(TIMING)


@dataclass
class Comparison:
    a_name: str
    b_name: str
    profile: str
    metrics: list[MetricRow]  # both reports have them
    only_in_a: list[str]  # "notebook: metric"
    only_in_b: list[str]
    settings: list[tuple[str, Any, Any]]  # (dotted key, A, B) of parameters and settings that differ
    environment: list[tuple[str, Any, Any]]  # versions, device, code revision that differ
    data: list[tuple[str, Any, Any]] = field(default_factory=list)  # (DATA_NAMES name, A, B) that differ

    @property
    def data_note(self) -> str | None:
        """One line when the reports read different data, e.g. "these reports used different data
        (corpus: shakespeare → my.csv); their metrics are not comparable"; None when they read the same."""
        if not self.data:
            return None
        return ("these reports used different data (" + "; ".join(f"{name}: {a} → {b}" for name, a, b in self.data)
                + "); their metrics are not comparable")

    @property
    def changed(self) -> list[MetricRow]:
        return [row for row in self.metrics if row.changed and not row.timing]

    @property
    def identical(self) -> bool:
        return not (any(row.changed for row in self.metrics) or self.only_in_a or self.only_in_b
                    or self.settings or self.environment)


def load_report(path: str | Path) -> dict:
    """A report's report.json, from its folder or the file itself.

    Raises:
        FileNotFoundError: there is no report.json.
        ValueError: it cannot be read, is not JSON, or is not shaped as a report (`_shape_problem` says where).
    """
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no report.json in {path}; pass a folder written by `python -m workbench report`")
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{file} is not valid JSON ({e}); pass the folder of a finished report") from None
    except OSError as e:  # e.g. no permission to read it
        raise ValueError(f"{file} cannot be read ({e.strerror}); pass a report you can read") from None
    problem = _shape_problem(report)
    if problem:
        raise ValueError(f"{file} is not a workbench report ({problem}); point at a folder written by "
                         "`python -m workbench report`, or run it again")
    return report


def _shape_problem(report: Any) -> str | None:
    """What keeps `compare_reports` from reading a parsed report.json, e.g. "notebooks[2] has no 'name'";
    None when it has the fields compare uses: a profile, and a list of notebooks, each an object with a
    text name and (where present) objects of metrics and parameters."""
    def kind(value: Any) -> str:
        return "null" if value is None else {bool: "true/false", str: "text", list: "a list",
                                              dict: "an object"}.get(type(value), "a number")

    if not isinstance(report, dict):
        return f"{kind(report)}, not an object"
    missing = [key for key in ("profile", "notebooks") if key not in report]
    if missing:
        return "no " + " or ".join(f"'{key}'" for key in missing)
    if not isinstance(report["notebooks"], list):
        return f"'notebooks' is {kind(report['notebooks'])}, not a list"
    for i, nb in enumerate(report["notebooks"]):
        if not isinstance(nb, dict):
            return f"notebooks[{i}] is {kind(nb)}, not an object"
        if "name" not in nb:
            return f"notebooks[{i}] has no 'name'"
        if not isinstance(nb["name"], str):
            return f"notebooks[{i}].name is {kind(nb['name'])}, not text"
        for key in ("metrics", "parameters"):
            if key in nb and not isinstance(nb[key], dict):
                return f"notebooks[{i}].{key} is {kind(nb[key])}, not an object"
    return None


def compare_reports(a: dict, b: dict, a_name: str = "A", b_name: str = "B") -> Comparison:
    """Compare report dicts `a` and `b` (as in report.json) of the same profile.

    Raises:
        ValueError: the profiles differ, or the reports share no metric to compare.
    """
    if a["profile"] != b["profile"]:
        raise ValueError(f"{a_name} ran profile {a['profile']!r} and {b_name} profile {b['profile']!r}; "
                         "compare two reports of one profile (their sizes differ by design)")
    values_a, values_b = _metrics(a), _metrics(b)
    if not set(values_a) & set(values_b):
        raise ValueError(f"{a_name} and {b_name} have no metric in common ({len(values_a)} and {len(values_b)} "
                         "metrics); compare reports whose notebooks ran (status ok)")
    rows = []
    for key in [k for k in values_a if k in values_b]:
        notebook, metric = key
        row = MetricRow(notebook, metric, values_a[key], values_b[key])
        if metric.endswith("_mean"):
            spreads = [values.get((notebook, metric[:-len("_mean")] + "_std")) for values in (values_a, values_b)]
            spreads = [s for s in spreads if isinstance(s, (int, float)) and s > 0]
            row.spread = max(spreads) if spreads else None
        rows.append(row)
    return Comparison(
        a_name=a_name, b_name=b_name, profile=a["profile"], metrics=rows,
        only_in_a=[f"{n}: {m}" for n, m in values_a if (n, m) not in values_b],
        only_in_b=[f"{n}: {m}" for n, m in values_b if (n, m) not in values_a],
        settings=_differences(_settings(a), _settings(b)), data=data_differences(a, b),
        environment=_differences(_flatten({key: a.get(key, {}) for key in ("environment", "machine", "code")}),
                                 _flatten({key: b.get(key, {}) for key in ("environment", "machine", "code")})))


def _metrics(report: dict) -> dict[tuple[str, str], Any]:
    """(notebook stem, metric) -> value: every metric plus each notebook's wall time ("notebook_wall_s":
    02 and 05 report their training run's own `wall_s`). A list of numbers
    counts as one metric per element (`sweep_val_loss[2]`; an empty one as itself, `[]`); the run folder
    in a path reads `run_dir`."""
    run_dir = str(report.get("run_dir") or "")
    values: dict[tuple[str, str], Any] = {}
    for nb in report["notebooks"]:
        stem = Path(nb["name"]).stem
        if nb.get("wall_s") is not None:
            values[(stem, "notebook_wall_s")] = nb["wall_s"]
        for key, value in nb.get("metrics", {}).items():
            if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
                values.update({(stem, f"{key}[{i}]"): v for i, v in enumerate(value)})
            elif isinstance(value, str) and run_dir and value.startswith(run_dir):
                values[(stem, key)] = "run_dir" + value[len(run_dir):]
            else:
                values[(stem, key)] = value
    return values


def data_parameters(report: dict) -> dict[str, list]:
    """The values of a report's data parameters (`DATA_NAMES`) over its notebooks, each distinct value
    once in notebook order: {"corpus": ["/data/my.csv"], "text_column": ["body"], ...}."""
    values: dict[str, list] = {}
    for nb in report["notebooks"]:
        for name, value in nb.get("parameters", {}).items():
            if name in DATA_NAMES and value not in values.setdefault(name, []):
                values[name].append(value)
    return values


def data_differences(a: dict, b: dict) -> list[tuple[str, str, str]]:
    """(name, A's value, B's value) of each data parameter that differs, as read in one line: a file by
    its name (its whole path where both have the same name), several values joined by " / "."""
    values_a, values_b = data_parameters(a), data_parameters(b)
    rows = []
    for name in [n for n in DATA_NAMES if _read_as(n, values_a) != _read_as(n, values_b)]:
        shown = [[Path(v).name if isinstance(v, str) and Path(v).is_absolute() else v for v in values.get(name, [])]
                 for values in (values_a, values_b)]
        if shown[0] == shown[1]:  # two files of one name
            shown = [values_a.get(name, []), values_b.get(name, [])]
        rows.append((name, *(" / ".join(map(str, vs)) or "—" for vs in shown)))
    return rows


def _read_as(name: str, values: dict[str, list]) -> list:
    """What a report's notebooks read for data parameter `name`: its values, or its default where no
    notebook had the parameter (a report written before it existed); locales as sets of codes."""
    read = values.get(name) or [DATA_DEFAULTS[name]]
    return [frozenset(parse_locales(v)) for v in read] if name == "locales" else read


def _settings(report: dict) -> dict[str, Any]:
    """What a report was asked to do: the profile's settings and seed, and each notebook's parameters
    (without run_dir, which names the report's own folder). A report written before `profile_defaults`
    was named so holds them as `settings`."""
    defaults = report.get("profile_defaults", report.get("settings", {}))
    settings = _flatten({"profile_defaults": defaults, "seed": report.get("seed")})
    for nb in report["notebooks"]:
        params = {k: v for k, v in nb.get("parameters", {}).items() if k != "run_dir"}
        settings.update(_flatten({f"{Path(nb['name']).stem}": params}))
    return settings


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: tree}


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(key, a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)]


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _delta(row: MetricRow) -> str:
    if not row.changed:
        return ""
    if row.delta is None:
        return "changed"
    text = f"{row.delta:+.4g}" if isinstance(row.delta, float) else f"{row.delta:+,d}"
    if row.spread is not None:
        text += f" (beyond seed spread ±{row.spread:.2g})" if row.beyond_spread else f" (within ±{row.spread:.2g})"
    return text


def format_comparison(comparison: Comparison) -> str:
    """The comparison as plain text: a table of every metric, then what ran differently."""
    c = comparison
    lines = ([c.data_note] if c.data_note else []) + [f"A: {c.a_name}", f"B: {c.b_name}", f"profile {c.profile}", ""]
    rows = [row for row in c.metrics if not row.timing] + [row for row in c.metrics if row.timing]
    width = max(len(f"{r.notebook}  {r.metric}") for r in rows)
    lines.append(f"{'metric':<{width}}  {'A':>12}  {'B':>12}  B - A")
    for i, row in enumerate(rows):
        if row.timing and (i == 0 or not rows[i - 1].timing):
            lines.append("timings (differ between any two runs):")
        name = f"{row.notebook}  {row.metric}"
        lines.append(f"{name:<{width}}  {_number(row.a):>12}  {_number(row.b):>12}  {_delta(row)}".rstrip())
    for label, keys in (("only in A", c.only_in_a), ("only in B", c.only_in_b)):
        if keys:
            lines += ["", f"metrics {label}: " + ", ".join(keys)]
    for label, diffs in (("parameters and settings", c.settings), ("environment", c.environment)):
        lines += ["", f"{label} that differ:" if diffs else f"{label}: the same"]
        lines += [f"  {key}: {_number(a)} -> {_number(b)}" for key, a, b in diffs]
    moved = [row for row in c.changed if row.beyond_spread]
    lines += ["", "no differences" if c.identical else
              f"{len(c.changed)} of {sum(not r.timing for r in c.metrics)} metrics differ"
              + (f", {len(moved)} beyond their seed spread" if moved else "")]
    return "\n".join(lines)


def comparison_html(comparison: Comparison) -> str:
    """A section for a report's index.html: whether the two read different data, the metrics that
    changed, then what ran differently."""
    esc, c = html.escape, comparison
    parts = [f"<h2>Compared with {esc(c.a_name)}</h2>"]
    if c.data_note:
        parts.append(f'<p class="different-data"><b>{esc(c.data_note)}</b></p>')
    if c.changed:
        rows = "\n".join(f'<tr class="{"moved" if r.beyond_spread else ""}"><td>{esc(r.notebook)}</td>'
                         f"<td>{esc(r.metric)}</td><td>{esc(_number(r.a))}</td><td>{esc(_number(r.b))}</td>"
                         f"<td>{esc(_delta(r))}</td></tr>" for r in c.changed)
        parts.append(f"<table><tr><th>notebook</th><th>metric</th><th>before</th><th>now</th><th>now - before</th>"
                     f"</tr>\n{rows}\n</table>")
    unchanged = sum(not r.changed and not r.timing for r in c.metrics)
    parts.append(f"<p>{len(c.changed)} metrics changed, {unchanged} the same (timings left out).</p>")
    for label, keys in (("Only before", c.only_in_a), ("Only now", c.only_in_b)):
        if keys:
            parts.append(f"<p>{label}: {esc(', '.join(keys))}</p>")
    for label, diffs in (("Parameters and settings", c.settings), ("Environment", c.environment)):
        if diffs:
            items = "".join(f"<li><code>{esc(k)}</code>: {esc(_number(a))} → {esc(_number(b))}</li>" for k, a, b in diffs)
            parts.append(f"<p>{label} that differ:</p><ul>{items}</ul>")
    return "\n".join(parts)
