"""Scores of translations against references: exact match, character error rate, chrF and BLEU.

    scores = translation_scores(predictions, references)          # {"exact_match": ..., "cer": ..., ...}
    table = per_locale_scores(test_df, predictions)               # one row per locale, plus "all"
    errors = error_table(test_df, predictions)                    # the wrong dates by kind of error and locale
    reference = rule_based_dates(test_df)                         # what a date parser gets on the same rows

chrF and BLEU come from `sacrebleu`; `sacrebleu_signatures` gives the signature strings that say
exactly how they were computed (print them beside the numbers). BLEU's default 13a tokenizer
splits an ISO date at its hyphens into only five tokens (`2034-11-02` -> `2034 - 11 - 02`), so
one wrong digit loses a whole token and every n-gram that spans it: a date's sentence BLEU takes
a few coarse values (one wrong digit in the year or day gives 67, in the month 30). The date task
therefore scores BLEU on characters (tokenize="char", written in the signature): ten tokens a
date, and one wrong digit costs only the n-grams around it.

`error_table` sorts a date model's mistakes by kind: day and month swapped (a short date that
two locales write alike), a wrong year (a held-out year copied imperfectly), or something else.

The rule-based reference is `dateparser` told the row's language (what a practitioner would
reach for), or babel's own `parse_date` where dateparser is not installed.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .data import require_columns

log = logging.getLogger(__name__)
ROWS_FIX = "pass the rows of a translation.PairTask split (task.test)"  # the fix of a table without its columns

DATE_BLEU_TOKENIZE = "char"  # see the module docstring


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions turning `a` into `b`."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def character_error_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Edit distance summed over the rows, divided by the references' characters (0 is perfect;
    above 1 is possible when predictions are longer than references)."""
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError("the references are empty; character error rate needs reference text")
    return sum(edit_distance(p, r) for p, r in zip(predictions, references)) / total


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references; translate every row once")
    if not references:
        raise ValueError("no rows to score; pass at least one prediction and reference")


def translation_scores(predictions: Sequence[str], references: Sequence[str],
                       bleu_tokenize: str = DATE_BLEU_TOKENIZE) -> dict[str, float]:
    """Exact match (0..1), character error rate (0 best), chrF and BLEU (0..100, sacrebleu) of
    `predictions` against one reference each.

    Args:
        predictions, references: N strings each.
        bleu_tokenize: sacrebleu's BLEU tokenizer ("char" for dates, "13a" for sentences).
    Returns:
        {"n", "exact_match", "cer", "chrf", "bleu"}.
    """
    import sacrebleu

    _check_lengths(predictions, references)
    preds, refs = [str(p) for p in predictions], [str(r) for r in references]
    return {"n": len(refs), "exact_match": float(np.mean([p == r for p, r in zip(preds, refs)])),
            "cer": character_error_rate(preds, refs),
            "chrf": float(sacrebleu.corpus_chrf(preds, [refs]).score),
            "bleu": float(sacrebleu.corpus_bleu(preds, [refs], tokenize=bleu_tokenize).score)}


def sacrebleu_signatures(bleu_tokenize: str = DATE_BLEU_TOKENIZE) -> dict[str, str]:
    """sacrebleu's signature of the chrF and BLEU that `translation_scores` computes (print them)."""
    from sacrebleu.metrics import BLEU, CHRF

    signatures = {}
    for name, metric in (("bleu", BLEU(tokenize=bleu_tokenize)), ("chrf", CHRF())):
        metric.corpus_score(["a"], [["a"]])  # the signature names the number of references, known once scored
        signatures[name] = str(metric.get_signature())
    return signatures


def per_locale_scores(rows: pd.DataFrame, predictions: Sequence[str], bleu_tokenize: str = DATE_BLEU_TOKENIZE
                      ) -> pd.DataFrame:
    """`translation_scores` for each locale of `rows` and for all of them ("all", the last row).

    Args:
        rows: DataFrame with target and locale columns.
        predictions: one per row, in order.
    Returns:
        DataFrame indexed by locale with columns n, exact_match, cer, chrf, bleu.
    """
    require_columns(rows, ["target", "locale"], ROWS_FIX)
    _check_lengths(predictions, rows["target"].tolist())
    df = rows.assign(prediction=[str(p) for p in predictions])
    table = {loc: translation_scores(g["prediction"].tolist(), g["target"].tolist(), bleu_tokenize)
             for loc, g in df.groupby("locale", sort=True)}
    table["all"] = translation_scores(df["prediction"].tolist(), df["target"].tolist(), bleu_tokenize)
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("locale").astype({"n": int})


# ---------------------------------------------------------------------------------------------
# Kinds of error on the date task
# ---------------------------------------------------------------------------------------------

ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
ERROR_KINDS = ("day and month swapped", "year", "other")  # error_table's order


def date_error_kind(prediction: str, target: str) -> str:
    """What is wrong with a predicted ISO date: "" when it is right, "day and month swapped" when it
    is the target with day and month exchanged (the year right), "year" when only the year is wrong,
    "other" for anything else (a wrong day or month, text that is no YYYY-MM-DD, a target that is not)."""
    if prediction == target:
        return ""
    p, t = ISO_DATE.fullmatch(prediction), ISO_DATE.fullmatch(target)
    if p is None or t is None:
        return "other"
    (py, pm, pd_), (ty, tm, td) = p.groups(), t.groups()
    if py == ty and (pm, pd_) == (td, tm):
        return "day and month swapped"
    if py != ty and (pm, pd_) == (tm, td):
        return "year"
    return "other"


def error_table(rows: pd.DataFrame, predictions: Sequence[str]) -> pd.DataFrame:
    """The wrong predictions grouped by kind of error (`date_error_kind`) and locale, with the first
    of each group as an example.

    Args:
        rows: DataFrame with source, target and locale columns (and format, for the date task).
        predictions: one per row, in order.
    Returns:
        one row per (kind, locale) that has errors, in `ERROR_KINDS` order and then most errors first:
        kind, locale, errors (how many), and the example's [format,] source, target and prediction.
        Empty (same columns) when every prediction is right; the errors column sums to the wrong rows.
    """
    require_columns(rows, ["source", "target", "locale"], ROWS_FIX)
    _check_lengths(predictions, rows["target"].tolist())
    example = [c for c in ("format", "source", "target") if c in rows.columns] + ["prediction"]
    df = rows.assign(prediction=[str(p) for p in predictions])
    df["kind"] = [date_error_kind(p, t) for p, t in zip(df["prediction"], df["target"])]
    wrong = df[df["kind"] != ""]
    table = (wrong.groupby(["kind", "locale"], sort=False)
             .agg(errors=("target", "size"), **{c: (c, "first") for c in example}).reset_index())
    table["order"] = table["kind"].map(ERROR_KINDS.index)
    table = table.sort_values(["order", "errors", "locale"], ascending=[True, False, True], kind="stable")
    return table.drop(columns="order").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# The rule-based reference
# ---------------------------------------------------------------------------------------------


def date_parser(prefer: str = "dateparser") -> tuple[str, Callable[[str, str], str]]:
    """A rule-based date parser: (its name, parse(text, locale) -> "YYYY-MM-DD" or "").

    `dateparser` (told the row's language; its settings keep it from guessing missing parts from
    today's date) when installed and `prefer` is "dateparser", else babel's `parse_date`, which reads
    numeric dates and little else. A text either cannot parse gives "".
    """
    if prefer == "dateparser":
        try:
            import dateparser
        except ImportError:
            log.warning("dateparser is not installed; the rule-based reference is babel's parse_date instead")
        else:
            settings = {"REQUIRE_PARTS": ["day", "month", "year"], "PREFER_LOCALE_DATE_ORDER": True}

            def parse(text: str, locale: str) -> str:
                with warnings.catch_warnings():  # dateparser's own deprecation noise
                    warnings.simplefilter("ignore")
                    d = dateparser.parse(text, languages=[locale.split("_")[0]], locales=None, settings=settings)
                return d.date().isoformat() if d is not None else ""

            return f"dateparser {dateparser.__version__}", parse
    elif prefer != "babel":
        raise ValueError(f"date parser {prefer!r} is not dateparser or babel; pick one of those")
    import babel
    from babel.dates import parse_date

    def parse_babel(text: str, locale: str) -> str:
        try:
            return parse_date(text, locale=locale).isoformat()
        except (ValueError, IndexError):  # babel raises IndexError on month names
            return ""

    return f"babel {babel.__version__} parse_date", parse_babel


def _is_locale(code: str) -> bool:
    """Whether babel knows `code` as a locale ("en", "pt_BR", "zh-Hant"; not "all")."""
    from babel import Locale, UnknownLocaleError

    for sep in ("_", "-"):
        try:
            Locale.parse(code, sep=sep)
            return True
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    return False


def check_date_rows(rows: pd.DataFrame) -> None:
    """A one-line ValueError unless a date parser can read `rows`: a source and a locale it knows in
    each (the date task's rows; your own pairs' locale, "all", names no language)."""
    require_columns(rows, ["source", "locale"], ROWS_FIX)
    unknown = sorted({loc for loc in rows["locale"] if not _is_locale(loc)})
    if unknown:
        raise ValueError(f"a date parser reads the date task's rows, each with its language; locale(s) "
                         f"{', '.join(map(repr, unknown[:5]))} name none: for your own pairs pass reference=None")


def rule_based_dates(rows: pd.DataFrame, prefer: str = "dateparser") -> tuple[str, list[str], float]:
    """What a rule-based parser writes for each source of `rows` (DataFrame with source and locale).

    Returns:
        (the parser's name, N predictions ("" where it failed), sentences per second).
    """
    check_date_rows(rows)
    name, parse = date_parser(prefer)
    start = time.perf_counter()
    out = [parse(s, loc) for s, loc in zip(rows["source"], rows["locale"])]
    return name, out, len(out) / max(time.perf_counter() - start, 1e-9)


def comparison_row(name: str, rows: pd.DataFrame, predictions: Sequence[str], sentences_per_s: float,
                   bleu_tokenize: str = DATE_BLEU_TOKENIZE, **extra: Any) -> dict[str, Any]:
    """One row of a decoder comparison table: scores on `rows` plus speed and `extra` columns."""
    require_columns(rows, ["target"], ROWS_FIX)
    return {"decoder": name, **translation_scores(predictions, rows["target"].tolist(), bleu_tokenize),
            "sentences_per_s": sentences_per_s, **extra}
