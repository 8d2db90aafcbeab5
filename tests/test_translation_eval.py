"""Translation scores: exact match, character error rate, sacrebleu's chrF/BLEU and their signatures,
the per-locale table, and the rule-based date reference on the built-in task."""

import pandas as pd
import pytest

from workbench.translation import date_task
from workbench.translation_eval import (character_error_rate, edit_distance, per_locale_scores, rule_based_dates,
                                        sacrebleu_signatures, translation_scores)


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
