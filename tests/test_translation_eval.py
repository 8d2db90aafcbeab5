"""Translation scores: exact match, character error rate, sacrebleu's chrF/BLEU and their signatures,
the per-locale table, and the rule-based date reference on the built-in task."""

import pandas as pd
import pytest

from workbench.translation import date_task
from workbench.translation_eval import (character_error_rate, date_error_kind, edit_distance, error_table,
                                        per_locale_scores, rule_based_dates, sacrebleu_signatures, translation_scores)


def test_edit_distance_and_cer():
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("ab", "ab") == 0
    # one substitution in 10 characters, a perfect row of 10: 1 / 20
    assert character_error_rate(["2026-11-27", "1999-01-01"], ["2026-11-26", "1999-01-01"]) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="references are empty"):
        character_error_rate([""], [""])


def test_translation_scores_perfect_wrong_and_partial():
    refs = ["2026-11-26", "1987-03-05"]
    perfect = translation_scores(refs, refs)
    assert perfect == {"n": 2, "exact_match": 1.0, "cer": 0.0, "chrf": pytest.approx(100.0), "bleu": pytest.approx(100.0)}
    half = translation_scores(["2026-11-26", "1987-03-06"], refs)
    assert half["exact_match"] == 0.5 and half["cer"] == pytest.approx(1 / 20)
    assert 50 < half["chrf"] < 100 and 50 < half["bleu"] < 100  # char BLEU credits the nine right characters
    wrong = translation_scores(["", ""], refs)
    assert wrong["exact_match"] == 0 and wrong["cer"] == 1.0 and wrong["bleu"] == 0.0
    with pytest.raises(ValueError, match="1 predictions for 2 references"):
        translation_scores(["x"], refs)


def test_signatures_name_the_tokenizer():
    sig = sacrebleu_signatures()
    assert "tok:char" in sig["bleu"] and "nrefs:1" in sig["bleu"] and sig["chrf"].startswith("nrefs:1|")
    assert "tok:13a" in sacrebleu_signatures("13a")["bleu"]


def test_per_locale_table_scores_each_locale_and_all():
    rows = pd.DataFrame({"target": ["2026-11-26", "1987-03-05", "2001-01-01"], "locale": ["fr", "fr", "en"]})
    table = per_locale_scores(rows, ["2026-11-26", "x", "2001-01-01"])
    assert list(table.index) == ["en", "fr", "all"]
    assert table.loc["fr", "exact_match"] == 0.5 and table.loc["en", "exact_match"] == 1.0
    assert table.loc["all", "n"] == 3 and table.loc["all", "exact_match"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("prediction, kind", [("1961-12-03", ""), ("1961-03-12", "day and month swapped"),
                                               ("1988-12-03", "year"), ("1961-12-04", "other"),
                                               ("1960-03-12", "other"), ("3 déc. 1961", "other")])
def test_date_error_kind(prediction, kind):
    assert date_error_kind(prediction, "1961-12-03") == kind
    assert date_error_kind("x", "not a date") == "other" and date_error_kind("y", "y") == ""


def test_error_table_groups_the_wrong_rows_by_kind_and_locale_with_an_example():
    rows = pd.DataFrame({"source": ["12/3/61", "8/12/61", "3/1/25", "1998", "1998 b", "5/4/89", "ok"],
                         "target": ["1961-12-03", "1961-12-08", "2025-01-03", "1998-02-07", "1998-07-25", "1989-05-04",
                                    "2000-01-01"],
                         "locale": ["en", "es", "es", "pt", "pt", "en", "fr"], "format": ["short"] * 3 + ["full"] * 2
                         + ["short"] * 2})
    predictions = ["1961-03-12", "1961-08-12", "2025-03-01", "1989-02-07", "1988-07-25", "1989-04-04", "2000-01-01"]
    table = error_table(rows, predictions)
    assert list(table.columns) == ["kind", "locale", "errors", "format", "source", "target", "prediction"]
    assert table[["kind", "locale", "errors"]].values.tolist() == [
        ["day and month swapped", "es", 2], ["day and month swapped", "en", 1], ["year", "pt", 2], ["other", "en", 1]]
    assert table.loc[0, ["source", "prediction"]].tolist() == ["8/12/61", "1961-08-12"]  # the group's first row
    assert table["errors"].sum() == 6  # every wrong row once; the right one is not there
    plain = error_table(rows.drop(columns="format"), predictions)  # a user's file has no format column
    assert "format" not in plain.columns and len(plain) == 4
    assert error_table(rows, rows["target"].tolist()).empty
    for table in (error_table, per_locale_scores):  # not a KeyError from pandas
        with pytest.raises(ValueError, match="has no column 'locale'.*pass the rows of a translation.PairTask split"):
            table(rows.drop(columns="locale"), predictions)
    with pytest.raises(ValueError, match="6 predictions for 7 references"):
        error_table(rows, predictions[:-1])


@pytest.mark.parametrize("parser", ["dateparser", "babel"])
def test_rule_based_reference_on_the_date_task(parser):
    pytest.importorskip(parser)
    test = date_task(10, 10, 200, seed=0).test
    name, predictions, speed = rule_based_dates(test, parser)
    assert name.startswith(parser) and len(predictions) == len(test) and speed > 0
    table = per_locale_scores(test, predictions)
    # babel's parse_date reads numbers only: Chinese/Japanese "2026年11月26日" yes, "26 novembre" no
    assert table.loc["zh", "exact_match"] > 0.9
    if parser == "dateparser":
        assert table.loc["all", "exact_match"] > 0.9
    else:
        assert table.loc["fr", "exact_match"] < 0.6
