"""Translation tasks: the date task's disjoint years, locales and month spans; user files of pairs
(every bad input named with its fix); the pair tokenizer's specials, <unk> and round trips."""

import datetime as dt
import json

import pandas as pd
import pytest
import torch

from workbench.translation import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, PairTokenizer, date_task, encode_pairs, file_task,
                                   load_pairs, month_probe, month_span, split_of_year, train_pair_tokenizer)


@pytest.fixture(scope="module")
def dates():
    return date_task(n_train=2000, n_val=200, n_test=400, seed=0)


def test_date_splits_are_disjoint_years_and_targets_are_the_iso_dates(dates):
    years = {s: {int(t[:4]) for t in dates.split(s)["target"]} for s in ("train", "val", "test")}
    assert not (years["train"] & years["test"] or years["train"] & years["val"] or years["val"] & years["test"])
    assert years["test"] <= {1961, 1970, 1989, 1998, 2007, 2016, 2025, 2034} and len(years["test"]) == 8
    assert all((y // 10 + y) % 10 == 3 for y in years["val"])
    assert len(years["train"]) > 50  # spread over the whole range, not one block
    # every digit is trained in every position of the year (the last one included)
    train_years = {str(y) for y in years["train"]}
    assert all({y[i] for y in train_years} >= {t[i] for t in map(str, years["test"])} for i in range(4))
    # no test year appears in any training source (its two digits do, as days and months)
    train_text = " ".join(dates.train["source"])
    assert not any(str(y) in train_text for y in years["test"])
    for row in dates.test.head(50).itertuples():
        assert dt.date.fromisoformat(row.target).isoformat() == row.target == row.date


def test_date_sources_are_babel_in_every_locale_and_format(dates):
    assert set(dates.train["locale"]) == {"en", "fr", "de", "es", "it", "pt", "nl", "ru", "zh", "ja"}
    assert set(dates.train["format"]) == {"full", "long", "medium", "short"}
    row = date_task(n_train=1, n_val=1, n_test=1, locales=["fr"], formats=["full"], seed=3).train.iloc[0]
    from babel.dates import format_date

    assert row["source"] == format_date(dt.date.fromisoformat(row["target"]), "full", locale="fr")
    assert not dates.train["source"].duplicated().any()


def test_date_task_is_deterministic_by_seed():
    a, b = date_task(50, 10, 10, seed=1), date_task(50, 10, 10, seed=1)
    assert a.train.equals(b.train) and a.test.equals(b.test)
    assert not a.train.equals(date_task(50, 10, 10, seed=2).train)


def test_month_span_finds_whole_month_words_only():
    assert month_span("jeudi 26 novembre 2026", 11, "fr") == (9, 17)
    s = "martedì 5 marzo 1985"  # "mar" (March, abbreviated) is inside "martedì": the whole word wins
    assert s[slice(*month_span(s, 3, "it"))] == "marzo"
    assert month_span("26.11.26", 11, "de") == (-1, -1)
    assert month_span("2026年11月26日", 11, "zh") == (-1, -1)
    assert month_span("26 нояб. 2026 г.", 11, "ru") == (3, 8)


def test_month_spans_cover_most_word_formats(dates):
    words = dates.test[dates.test["format"].isin(["full", "long"]) & ~dates.test["locale"].isin(["zh", "ja"])]
    assert (words["month_start"] >= 0).all()
    found = dates.test[dates.test["month_start"] >= 0]
    assert len(found) > 0.4 * len(dates.test)
    for row in found.head(100).itertuples():
        assert row.month_end > row.month_start and not row.source[row.month_start:row.month_end].isdigit()


def test_locale_counts_count_each_locale_in_each_split(dates):
    counts = dates.locale_counts()
    assert list(counts.index) == ["train", "val", "test"]
    assert sorted(counts.columns) == sorted(set(dates.train["locale"]))
    for split in ("train", "val", "test"):
        df = dates.split(split)
        assert counts.loc[split].sum() == len(df)
        assert counts.loc[split, "fr"] == (df["locale"] == "fr").sum()
    one = date_task(n_train=30, n_val=2, n_test=2, locales=["fr", "de", "ja"], formats=["long"], seed=0).locale_counts()
    assert one.loc["train"].notna().all() and one.isna().any(axis=None)  # a locale missing from a small split: NaN


def test_month_probe_is_the_first_row_with_a_month_name(dates):
    probe = month_probe(dates.test)
    named = dates.test[dates.test["month_start"] >= 0]
    assert probe.name == named.index[0] and probe["source"] == named.iloc[0]["source"]
    assert not any(ch.isdigit() for ch in probe["source"][probe["month_start"]:probe["month_end"]])
    numbers = dates.test[dates.test["month_start"] < 0]
    assert month_probe(pd.concat([numbers.head(3), named.iloc[[2]]]))["source"] == named.iloc[2]["source"]
    with pytest.raises(ValueError, match="no row writes its month as a word"):
        month_probe(numbers)
    with pytest.raises(ValueError, match=r"no month_start column; pass rows of the date task"):
        month_probe(numbers[["source", "target"]])


def test_date_task_rejects_bad_options():
    with pytest.raises(ValueError, match="locale 'xx_YY'"):
        date_task(10, 10, 10, locales=["xx_YY"])
    with pytest.raises(ValueError, match="pick from full, long, medium, short"):
        date_task(10, 10, 10, formats=["tiny"])
    with pytest.raises(ValueError, match="n_test must be a positive integer"):
        date_task(10, 10, 0)


def test_split_of_year_holds_out_one_year_per_decade():
    assert [split_of_year(y) for y in (2007, 2021, 2027, 1969)] == ["test", "val", "train", "train"]
    for decade in range(1960, 2040, 10):
        splits = [split_of_year(y) for y in range(decade, decade + 10)]
        assert splits.count("test") == splits.count("val") == 1


# ---------------------------------------------------------------------------------------------- user files


def _rows(n):
    return [{"en": f"number {i}", "fr": f"nombre {i}", "locale": "en-fr" if i % 2 else "x"} for i in range(n)]


def test_file_task_reads_tsv_csv_and_jsonl(tmp_path):
    import pandas as pd

    rows = pd.DataFrame(_rows(40))
    (tmp_path / "p.tsv").write_text(rows.to_csv(sep="\t", index=False))
    rows.to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(40)))
    tasks = [file_task(tmp_path / f"p.{ext}", "en", "fr") for ext in ("tsv", "csv", "jsonl")]
    for task in tasks:
        assert (len(task.train), len(task.val), len(task.test)) == (32, 4, 4)
        assert set(task.test["locale"]) <= {"en-fr", "x"}
        assert task.train.equals(tasks[0].train)  # the same seeded split whatever the format
    every = pd.concat([tasks[0].train, tasks[0].val, tasks[0].test])
    assert sorted(every["source"]) == sorted(rows["en"])


def test_file_task_split_column_and_default_locale(tmp_path):
    rows = [{"source": f"a{i}", "target": f"b{i}", "split": ["train", "val", "test"][i % 3]} for i in range(12)]
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = load_pairs(path)
    assert list(task.val["source"]) == ["a1", "a4", "a7", "a10"]
    assert set(task.train["locale"]) == {"all"}


def test_file_task_rows_without_a_locale_keep_a_locale_of_their_own(tmp_path):
    """A null (JSONL) or empty (TSV) locale is "unknown": per-locale scores would drop a null one."""
    import pandas as pd

    from workbench.translation_eval import per_locale_scores

    rows = [{"source": f"a{i}", "target": f"b{i}", "locale": "x" if i % 3 else None} for i in range(30)]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame(rows).fillna("").to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    for name in ("p.jsonl", "p.tsv"):
        task = file_task(tmp_path / name)
        every = pd.concat([task.train, task.val, task.test])
        assert (every["locale"] == "unknown").sum() == 10 and set(every["locale"]) == {"x", "unknown"}, name
        table = per_locale_scores(every, every["target"].tolist())
        assert table.loc[["unknown", "x"], "n"].sum() == table.loc["all", "n"] == 30, name


@pytest.mark.parametrize("content, match", [
    ("en\tde\nhello\thallo\n", r"has no column 'fr' \(columns: en, de\); pass --source-col / --target-col"),
    ("en\tfr\nhello\t\n" + "a\tb\n" * 20, r"1 row\(s\) have an empty target \(first: row 0\); fill or remove them"),
    ("en\tfr\n" + "a\tb\n" * 5, r"has 5 pair\(s\); a translation task needs at least 10"),
    ("en\tfr\tsplit\n" + "a\tb\ttrain\n" * 20, r"the val split is empty"),
    ("en\tfr\tsplit\n" + "a\tb\tdev\n" * 20, r"split column has value\(s\) 'dev'; use only train, val and test"),
    ("en\tfr\tlocale\n" + "a\tb\tall\n" * 10 + "a\tb\tx\n" * 10, r"the locale 'all' names the total row of the "
                                                             r"per-locale scores; rename that locale"),
])
def test_file_task_bad_input_is_one_line_naming_the_fix(tmp_path, content, match):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        file_task(path, "en", "fr")
    assert "\n" not in str(e.value)


def test_file_task_missing_file_or_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --task dates or a .tsv/.csv/.jsonl file"):
        file_task(tmp_path / "nope.tsv")
    with pytest.raises(ValueError, match="is a folder; pass --task dates or a"):  # not "does not exist"
        file_task(tmp_path)
    (tmp_path / "p.txt").write_text("a\tb\n")
    with pytest.raises(ValueError, match="save it as one of those"):
        file_task(tmp_path / "p.txt")


# ---------------------------------------------------------------------------------------------- tokens


def test_char_pair_tokenizer_specials_unknowns_and_round_trip(dates):
    tok = train_pair_tokenizer(dates)
    assert tok.vocab_size == len(set("".join(dates.train["source"]) + "".join(dates.train["target"]))) + 4
    for text in dates.test["source"].head(50):
        assert tok.decode(tok.encode(text)) == text  # CJK and ru's narrow no-break space included
    ids = tok.encode("26 Ωmega")
    assert ids.count(UNK_ID) == 1 and tok.unknown("26 Ωmega") == ["Ω"]
    assert tok.decode(ids) == "26 \ufffdmega"
    assert tok.decode([BOS_ID, *tok.encode("2026"), EOS_ID, *tok.encode("99")]) == "2026"  # stops at <eos>
    assert tok.tokens([PAD_ID, BOS_ID, *tok.encode("年")]) == ["<pad>", "<bos>", "年"]
    again = PairTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.encode("jeudi 26 novembre") == tok.encode("jeudi 26 novembre")


def test_bpe_pair_tokenizer_is_shared_and_round_trips(dates):
    tok = train_pair_tokenizer(dates, "bpe", vocab_size=300)
    assert tok.kind == "bpe" and tok.vocab_size <= 304
    for text in list(dates.test["source"].head(20)) + ["Ωmega 2026-11-26"]:
        ids = tok.encode(text)
        assert min(ids) >= 4 and tok.decode(ids) == text
    with pytest.raises(ValueError, match="not char or bpe"):
        train_pair_tokenizer(dates, "word")


def test_encode_pairs_pads_and_frames_targets(dates):
    tok = train_pair_tokenizer(dates)
    pairs = dates.test.head(5)
    src, tgt = encode_pairs(tok, pairs)
    assert src.dtype == torch.long and src.shape == (5, pairs["source"].str.len().max())
    assert tgt.shape == (5, 12)  # <bos> + 10 characters + <eos>
    assert (tgt[:, 0] == BOS_ID).all() and (tgt[:, -1] == EOS_ID).all()
    for i, s in enumerate(pairs["source"]):
        assert tok.decode(src[i]) == s and (src[i, len(s):] == PAD_ID).all()
    src, tgt = encode_pairs(tok, pairs, max_src_len=4, max_tgt_len=6)
    assert src.shape[1] == 4 and tgt.shape[1] == 6 and (tgt[:, -1] == EOS_ID).all()
