"""Comparing two reports (`python -m workbench compare`): identical reports show no differences, a
changed metric shows its delta and whether it moved beyond its seed spread, settings and environment
differences are listed, and mismatched or broken reports end in one `error:` line."""

import copy
import json
from pathlib import Path

import pytest
from helpers import cli

from workbench.report_diff import compare_reports, comparison_html, format_comparison, load_report


def make_report(run_dir: str = "/r/a/run") -> dict:
    """A report.json as run_report writes it, two notebooks, one with a seed spread."""
    return {
        "status": "ok", "profile": "default", "started": "2026-11-26T10:00:00+00:00", "wall_s": 100.0,
        "run_dir": run_dir, "error": None, "seed": 1337, "compared_with": None,
        "code": {"revision": "a" * 40, "uncommitted_changes": False},
        "environment": {"python": "3.11.7", "torch": "2.13.0+cpu", "device": "cpu"},
        "parameters": {}, "profile_defaults": {"pretraining": {"run": {"train": {"max_iters": 900, "lr": 0.002}}}},
        "notebooks": [
            {"name": "02_pretraining.ipynb", "status": "ok", "wall_s": 60.0,
             "parameters": {"profile": "default", "run_dir": run_dir, "probe": "To be", "corpus": "shakespeare",
                            "text_column": "text"},
             "metrics": {"val_loss": 4.02, "params": 1055488, "sweep_val_loss": [5.9, 5.5], "tokens_per_s": 15000.0,
                         "source": f"{run_dir}/pretrain"}},
            {"name": "03_finetuning.ipynb", "status": "ok", "wall_s": 40.0,
             "parameters": {"profile": "default", "run_dir": run_dir, "classification_task": "genre", "text_col": "text",
                            "label_col": "label"},
             "metrics": {"full_test_macro_f1_mean": 0.40, "full_test_macro_f1_std": 0.013,
                         "hf_test_macro_f1_mean": 0.42, "best_mode": "hf"}},  # hf ran once: no _std
        ]}


def write(folder: Path, report: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def row(comparison, notebook, metric):
    return next(r for r in comparison.metrics if (r.notebook, r.metric) == (notebook, metric))


def test_identical_reports_have_no_differences(tmp_path):
    a = write(tmp_path / "a", make_report("/r/a/run"))
    b = write(tmp_path / "b", make_report("/r/b/run"))  # another folder: paths under run_dir still match
    comparison = compare_reports(load_report(a), load_report(b))
    assert comparison.identical and comparison.changed == []
    assert not comparison.settings and not comparison.environment
    code, out, err = cli("compare", a, b)
    assert code == 0 and err == ""
    assert out.rstrip().endswith("no differences")
    assert "02_pretraining  val_loss" in out and "4.02" in out  # every metric is listed, side by side


def test_a_changed_metric_is_reported_with_its_delta_and_its_seed_spread(tmp_path):
    a, b = make_report(), make_report()
    b["notebooks"][0]["metrics"]["val_loss"] = 3.92
    b["notebooks"][0]["metrics"]["sweep_val_loss"] = [5.9, 5.4]
    b["notebooks"][1]["metrics"].update(full_test_macro_f1_mean=0.45,  # moved by 0.05 > its spread 0.013
                                        hf_test_macro_f1_mean=0.43, best_mode="full")  # one seed: no spread
    comparison = compare_reports(a, b)
    assert {(r.notebook, r.metric) for r in comparison.changed} == {
        ("02_pretraining", "val_loss"), ("02_pretraining", "sweep_val_loss[1]"),
        ("03_finetuning", "full_test_macro_f1_mean"), ("03_finetuning", "hf_test_macro_f1_mean"),
        ("03_finetuning", "best_mode")}
    assert row(comparison, "02_pretraining", "val_loss").delta == pytest.approx(-0.10)
    full, hf = row(comparison, "03_finetuning", "full_test_macro_f1_mean"), row(comparison, "03_finetuning", "hf_test_macro_f1_mean")
    assert full.spread == 0.013 and full.beyond_spread
    assert hf.spread is None and not hf.beyond_spread
    text = format_comparison(comparison)
    assert "02_pretraining  val_loss" in text and "-0.1" in text
    assert "+0.05 (beyond seed spread ±0.013)" in text
    assert "best_mode" in text and "changed" in text
    assert text.rstrip().endswith("5 of 9 metrics differ, 1 beyond their seed spread")


def test_a_change_within_the_seed_spread_is_not_marked_and_timings_are_apart(tmp_path):
    a, b = make_report(), make_report()
    b["notebooks"][1]["metrics"]["full_test_macro_f1_mean"] = 0.41
    b["notebooks"][0]["metrics"]["tokens_per_s"] = 9000.0
    a["notebooks"][1]["metrics"]["beam_4_sentences_per_s"] = 700.0  # a speed of any unit is a timing
    b["notebooks"][1]["metrics"]["beam_4_sentences_per_s"] = 800.0
    a["notebooks"][0]["metrics"]["wall_s"], b["notebooks"][0]["metrics"]["wall_s"] = 20.0, 21.0  # its training's
    comparison = compare_reports(a, b)
    assert [r.metric for r in comparison.changed] == ["full_test_macro_f1_mean"]  # timings are not results
    assert {r.metric for r in comparison.metrics if r.timing} == {"notebook_wall_s", "wall_s", "tokens_per_s",
                                                                 "beam_4_sentences_per_s"}
    times = {(r.notebook, r.metric): (r.a, r.b) for r in comparison.metrics if r.metric.endswith("wall_s")}
    assert times == {("02_pretraining", "notebook_wall_s"): (60.0, 60.0), ("02_pretraining", "wall_s"): (20.0, 21.0),
                     ("03_finetuning", "notebook_wall_s"): (40.0, 40.0)}  # the notebook's time is not overwritten
    text = format_comparison(comparison)
    assert "(within ±0.013)" in text and "beyond" not in text
    assert text.index("timings") < text.index("tokens_per_s")


def test_parameters_settings_and_environment_differences_are_listed(tmp_path):
    a, b = make_report(), copy.deepcopy(make_report())
    b["profile_defaults"]["pretraining"]["run"]["train"]["max_iters"] = 1200
    b["notebooks"][0]["parameters"]["probe"] = "O Romeo"
    b["environment"]["torch"] = "2.11.0+cu128"
    b["environment"]["device"] = "NVIDIA H100"
    b["code"] = {"revision": "b" * 40, "uncommitted_changes": True}
    comparison = compare_reports(a, b)
    assert comparison.settings == [("02_pretraining.probe", "To be", "O Romeo"),
                                   ("profile_defaults.pretraining.run.train.max_iters", 900, 1200)]
    assert comparison.data == [] and comparison.data_note is None  # a prompt is no other data
    assert [key for key, _, _ in comparison.environment] == ["code.revision", "code.uncommitted_changes",
                                                             "environment.device", "environment.torch"]
    text = format_comparison(comparison)
    assert "profile_defaults.pretraining.run.train.max_iters: 900 -> 1,200" in text
    assert text.startswith("A: A\n")  # nothing above: the same data
    assert "environment.device: cpu -> NVIDIA H100" in text
    assert not comparison.identical and comparison.changed == []


def test_reports_of_other_data_say_so_first_in_one_line(tmp_path):
    a, b = make_report(), make_report()
    b["notebooks"][0]["parameters"].update(corpus="/home/me/my.csv", text_column="body")
    b["notebooks"][1]["parameters"].update(label_col="topic")
    b["notebooks"][1]["metrics"]["full_test_macro_f1_mean"] = 0.8
    comparison = compare_reports(a, b)
    assert comparison.data == [("corpus", "shakespeare", "my.csv"), ("text_column", "text", "body"),
                               ("label_col", "label", "topic")]
    note = ("these reports used different data (corpus: shakespeare → my.csv; text_column: text → body; "
            "label_col: label → topic); their metrics are not comparable")
    text = format_comparison(comparison)
    assert text.splitlines()[0] == note and "+0.4" in text  # the deltas still follow, under it
    page = comparison_html(comparison)
    assert page.index("<h2>Compared with A</h2>") < page.index(note) < page.index("<table")
    # two files of one name are told apart by their whole paths
    a["notebooks"][0]["parameters"]["corpus"] = "/data/old/my.csv"
    assert compare_reports(a, b).data[0] == ("corpus", "/data/old/my.csv", "/home/me/my.csv")


def test_a_report_written_before_profile_defaults_compares_its_settings(tmp_path):
    old = make_report()
    old["settings"] = old.pop("profile_defaults")
    del old["parameters"]
    comparison = compare_reports(old, make_report())
    assert comparison.identical and comparison.settings == []


def test_a_data_parameter_an_older_report_lacked_reads_as_its_default(tmp_path):
    """A notebook that gained a data parameter (05's translation_task, locales, ...) ran on its default before:
    the first report after the change is not "other data"; locales compare as sets, a real change still shows."""
    new = make_report()
    new["notebooks"].append({"name": "05_seq2seq.ipynb", "status": "ok", "wall_s": 10.0, "metrics": {"exact": 0.5},
                             "parameters": {"profile": "default", "translation_task": "dates", "source_col": "source",
                                            "target_col": "target", "locales": "en,fr,de,es,it,pt,nl,ru,zh,ja"}})
    old = make_report()
    old["notebooks"].append({**new["notebooks"][-1], "parameters": {"profile": "default"}})
    assert compare_reports(old, new).data == [] and compare_reports(old, new).data_note is None
    shuffled = json.loads(json.dumps(new))
    shuffled["notebooks"][-1]["parameters"]["locales"] = "ja, zh,ru,nl,pt,it,es,de,fr,en"
    assert compare_reports(new, shuffled).data == []
    fewer = json.loads(json.dumps(new))
    fewer["notebooks"][-1]["parameters"]["locales"] = "en,de"
    assert [name for name, *_ in compare_reports(old, fewer).data] == ["locales"]


def test_metrics_only_one_report_has_are_named(tmp_path):
    a, b = make_report(), make_report()
    del b["notebooks"][0]["metrics"]["val_loss"]
    b["notebooks"][1]["metrics"]["tfidf_test_macro_f1_mean"] = 0.39
    text = format_comparison(compare_reports(a, b))
    assert "metrics only in A: 02_pretraining: val_loss" in text
    assert "metrics only in B: 03_finetuning: tfidf_test_macro_f1_mean" in text
    for report in (a, b):  # a sweep that ran nothing: still a metric of both
        report["notebooks"][0]["metrics"]["sweep_val_loss"] = []
    rows = [r for r in compare_reports(a, b).metrics if r.metric.startswith("sweep_val_loss")]
    assert [(r.metric, r.a, r.b, r.changed) for r in rows] == [("sweep_val_loss", [], [], False)]


def test_different_profiles_or_no_common_metrics_end_in_one_error_line(tmp_path):
    smoke = make_report()
    smoke["profile"] = "smoke"
    a, b = write(tmp_path / "a", make_report()), write(tmp_path / "smoke", smoke)
    code, out, err = cli("compare", a, b)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"error: {a} ran profile 'default' and {b} profile 'smoke'; "
                                        "compare two reports of one profile (their sizes differ by design)"]
    failed = make_report()
    for nb in failed["notebooks"]:
        nb.update(status="not run", wall_s=None, metrics={})
    code, _, err = cli("compare", a, write(tmp_path / "failed", failed))
    assert code == 2 and "have no metric in common" in err and "Traceback" not in err


@pytest.mark.parametrize("content, message", [(None, "no report.json in"), ("{not json", "is not valid JSON"),
                                              ('{"status": "ok"}', "is not a workbench report")])
def test_a_missing_or_broken_report_names_the_fix(tmp_path, content, message):
    folder = tmp_path / "broken"
    folder.mkdir()
    if content is not None:
        (folder / "report.json").write_text(content)
    code, _, err = cli("compare", write(tmp_path / "a", make_report()), folder)
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def _drop_name(report):
    del report["notebooks"][1]["name"]


@pytest.mark.parametrize("damage, problem", [
    (lambda r: r.update(notebooks="02_pretraining.ipynb"), "'notebooks' is text, not a list"),
    (_drop_name, "notebooks[1] has no 'name'"),
    (lambda r: r["notebooks"][0].update(metrics=[4.02]), "notebooks[0].metrics is a list, not an object"),
    (lambda r: r["notebooks"][1].update(parameters=None), "notebooks[1].parameters is null, not an object"),
])
def test_a_report_json_of_the_wrong_shape_names_the_field_and_the_fix(tmp_path, damage, problem):
    report = make_report()
    damage(report)
    damaged = write(tmp_path / "damaged", report)
    code, out, err = cli("compare", write(tmp_path / "a", make_report()), damaged)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [  # one line: the file, the field, the fix
        f"error: {damaged / 'report.json'} is not a workbench report ({problem}); "
        "point at a folder written by `python -m workbench report`, or run it again"]


def test_a_report_json_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    from pathlib import Path

    damaged = write(tmp_path / "b", make_report())
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == damaged / "report.json":
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    code, out, err = cli("compare", write(tmp_path / "a", make_report()), damaged)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"error: {damaged / 'report.json'} cannot be read (Permission denied); "
                                        "pass a report you can read"]
