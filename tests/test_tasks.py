"""Classification tasks: the genre task's whole-play splits and passages, user CSV/JSONL tables
(stratified, deterministic splits; every bad input named with its fix), and passages as token ids."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import LABELS, tiny_rows

from workbench.data import TEST_PLAYS, VAL_PLAYS, load_shakespeare
from workbench.tasks import encode_task, encode_texts, load_task, play_speeches, reading_coverage, table_task
from workbench.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def genre():
    return load_task("genre")


def test_genre_task_splits_by_whole_plays_into_three_classes(genre):
    assert genre.labels == ["comedy", "history", "tragedy"]
    plays = {s: set(genre.split(s)["play"]) for s in ("train", "val", "test")}
    assert plays["val"] == set(VAL_PLAYS) and plays["test"] == set(TEST_PLAYS)
    assert not (plays["train"] & plays["val"] or plays["train"] & plays["test"] or plays["val"] & plays["test"])
    assert len(plays["train"]) == 26
    for s in ("train", "val", "test"):
        df = genre.split(s)
        assert set(df["label"]) == set(genre.labels)
        assert (df["label_id"] == df["label"].map(genre.labels.index)).all()
        assert df["text"].str.len().between(1, 600).all()  # max_chars=600 by default
    assert len(genre.train) + len(genre.val) + len(genre.test) == 6154


def test_genre_passages_hold_no_speaker_names(genre):
    name_lines = {d.slug: {f"{speaker}:" for speaker, _ in play_speeches(d)} for d in load_shakespeare()}
    assert "HAMLET:" in name_lines["hamlet"] and "HAMLET:" in load_shakespeare()[0].text + "".join(
        d.text for d in load_shakespeare() if d.slug == "hamlet")  # the plays have them ...
    for df in (genre.train, genre.val, genre.test):  # ... the passages do not
        for text, play, speaker in zip(df["text"], df["play"], df["speaker"]):
            assert not text.startswith(f"{speaker}:")
            assert not set(text.split("\n")) & name_lines[play], (play, text[:80])


def test_genre_balance_table_matches_the_splits(genre):
    b = genre.balance()
    assert list(b.index) == genre.labels and list(b.columns) == ["train", "val", "test", "total"]
    for s in ("train", "val", "test"):
        assert b[s].sum() == len(genre.split(s))
    assert (b["total"] == b[["train", "val", "test"]].sum(axis=1)).all()
    assert np.allclose(genre.balance(normalize=True).sum(), 1.0)


def test_plays_by_split_lists_the_plays_of_each_split_and_label(genre, csv_task):
    table = genre.plays_by_split()
    assert list(table.index) == [(s, label) for s in ("train", "val", "test") for label in genre.labels]
    for (s, label), plays in table["plays"].items():
        df = genre.split(s)
        assert plays.split(", ") == list(df.loc[df["label"] == label, "play"].unique()), (s, label)
    assert set(", ".join(table.loc["test", "plays"]).split(", ")) == set(TEST_PLAYS)
    _, user_task = csv_task  # a user table: split by rows, no plays
    with pytest.raises(ValueError, match="no 'play' column"):
        user_task.plays_by_split()


def test_genre_passages_are_cut_at_whitespace():
    task = load_task("genre", max_chars=250)
    long = task.train["text"].str.len()
    assert long.max() <= 250 and (long > 200).any()
    whole = load_task("genre", max_chars=None)
    assert whole.train["text"].str.len().max() > 600
    cut = task.train["text"].iloc[int(long.argmax())]
    assert whole.train["text"].iloc[int(long.argmax())].startswith(cut)
    for cut, full in zip(task.train["text"], whole.train["text"]):  # every cut passage ends before whitespace
        assert full.startswith(cut) and (len(cut) == len(full) or full[len(cut)].isspace())


@pytest.mark.parametrize("text, max_chars, cut", [
    ("aaa bbb ccc", 9, "aaa bbb"), ("aaa bbb ccc", 7, "aaa bbb"),  # a cut right before a space keeps the word
    ("aaa\nbbb ccc", 5, "aaa"), ("abcdefghij", 4, "abcd"),  # a single long word is cut mid-word
    ("aaa bbb", 7, "aaa bbb"), ("aaa bbb", None, "aaa bbb"),
])
def test_cut_passage_cuts_at_the_last_whitespace(text, max_chars, cut):
    from workbench.tasks import cut_passage

    assert cut_passage(text, max_chars) == cut


def test_table_task_split_is_stratified_and_deterministic(csv_task):
    path, task = csv_task
    assert task.name == "tiny.csv" and task.labels == list(LABELS)
    assert task.balance().loc["comedy"].tolist() == [24, 3, 3, 30]
    again = load_task(path)
    assert again.test["text"].tolist() == task.test["text"].tolist()
    other = load_task(path, seed=1)
    assert other.test["text"].tolist() != task.test["text"].tolist()
    assert task.subsample(2).balance().loc["comedy"].tolist() == [2, 2, 2, 6]
    assert task.subsample(np.int64(2)).balance().loc["comedy"].tolist() == [2, 2, 2, 6]  # a count from numpy
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="per_label must be an integer >= 1"):
            task.subsample(bad)  # not pandas' "negative number of rows"


def test_table_task_reads_jsonl_and_a_split_column(tmp_path):
    rows = tiny_rows(4)
    for i, r in enumerate(rows):
        r["split"] = ("train", "train", "val", "test")[i % 4]
        r["review"], r["stars"] = r.pop("text"), r.pop("label")
    path = tmp_path / "t.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    task = load_task(path, text_col="review", label_col="stars")
    assert (len(task.train), len(task.val), len(task.test)) == (6, 3, 3)
    assert list(task.train.columns[:3]) == ["text", "label", "label_id"]


@pytest.mark.parametrize("rows, kwargs, fix", [
    ([{"text": "a", "label": "x"}], {"label_col": "genre"}, "(columns: text, label); pass --text-col / --label-col"),
    ([{"text": " ", "label": "x"}, {"text": "b", "label": "y"}], {}, "row(s) have an empty text"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": "x"}], {}, "at least two classes"),
    ([{"text": "a", "label": "x", "split": "train"}, {"text": "b", "label": "y", "split": "val"},
      {"text": "c", "label": "x", "split": "test"}], {}, "'y' appear in val/test but never in train"),
    ([{"text": "a", "label": "x", "split": "dev"}, {"text": "b", "label": "y", "split": "train"}], {},
     "use only train, val and test"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}], {}, "the val split is empty; add rows"),
    ([{"text": t, "label": 0.1 * i} for i, t in enumerate("abcdefghij")], {},  # a score, not a class
     "the val split is empty: the 'label' column has 10 different values in 10 rows; pass --label-col naming a "
     "column of classes"),
])
def test_table_task_errors_name_the_fix(tmp_path, rows, kwargs, fix):
    path = tmp_path / "bad.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(ValueError) as e:
        load_task(path, **kwargs)
    assert fix in str(e.value) and "\n" not in str(e.value)


def test_a_table_with_no_rows_is_named_not_an_index_error(tmp_path):
    (tmp_path / "h.csv").write_text("text,label\n")  # a header only
    (tmp_path / "e.jsonl").write_text("")
    for name in ("h.csv", "e.jsonl"):
        with pytest.raises(ValueError, match=f"{name} has no rows; add rows"):
            load_task(tmp_path / name)
    with pytest.raises(ValueError, match="is a folder; pass --task genre or a .csv/.tsv/.jsonl file"):
        load_task(tmp_path)  # it said "does not exist"


def test_a_class_missing_from_val_or_test_is_warned_about(tmp_path, csv_task, caplog):
    """A repeated header row makes a one-row class "label": stratified, it lands in train only."""
    path = tmp_path / "repeated_header.csv"
    path.write_text(csv_task[0].read_text() + "text,label\n")
    with caplog.at_level("WARNING", logger="workbench.tasks"):
        task = load_task(path)
    assert task.balance().loc["label"].tolist() == [1, 0, 0, 1]
    assert "class(es) 'label' have no val or test rows" in caplog.text and "add rows for them" in caplog.text
    assert "'comedy'" not in caplog.text
    caplog.clear()
    rows = [{"text": t, "label": lab, "split": s} for t, lab, s in
            [("a", "x", "train"), ("b", "y", "train"), ("c", "x", "val"), ("d", "y", "val"), ("e", "x", "test")]]
    pd.DataFrame(rows).to_csv(tmp_path / "split.csv", index=False)
    with caplog.at_level("WARNING", logger="workbench.tasks"):
        load_task(tmp_path / "split.csv")
    assert "class(es) 'y' have no val or test rows" in caplog.text and "add val and test rows" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="workbench.tasks"):
        load_task(csv_task[0])  # every class in every split
    assert caplog.text == ""


def test_max_chars_must_be_positive_or_0_for_no_limit(csv_task):
    path, _ = csv_task
    for spec in (path, "genre"):
        with pytest.raises(ValueError, match=r"max_chars \(--max-chars\) is -5; pass a positive number"):
            load_task(spec, max_chars=-5)
    whole = load_task(path, max_chars=None)
    assert load_task(path, max_chars=0).train["text"].tolist() == whole.train["text"].tolist()  # the CLI's 0: all
    with pytest.raises(ValueError, match=r"below min_chars=200.*pass --max-chars 0 \(None\)"):
        load_task("genre", max_chars=100)


def test_a_task_file_that_is_not_utf8_is_named_as_a_file(tmp_path):
    (tmp_path / "latin1.csv").write_bytes(b"text,label\ncaf\xe9,x\n")
    with pytest.raises(ValueError, match=r"^file .*latin1.csv is not UTF-8 text \(byte 0xe9 at offset 14\); re-save"):
        load_task(tmp_path / "latin1.csv")


def test_table_task_refuses_missing_files_and_other_formats(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --task genre"):
        load_task(tmp_path / "none.csv")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not .csv, .tsv or .jsonl"):
        table_task(tmp_path / "x.txt")
    pd.DataFrame(tiny_rows(10)).to_csv(tmp_path / "rows.tsv", sep="\t", index=False)  # a TSV, as seq2seq takes
    assert load_task(tmp_path / "rows.tsv").num_labels == 3


# ------------------------------------------------------------------------------ token ids
def test_long_texts_keep_their_start_and_short_ones_are_right_padded():
    tok = train_tokenizer("char", "the lord fool")
    idx, lengths = encode_texts(tok, ["the lord " * 20, "fool"], 32)
    assert lengths.tolist() == [32, 4] and idx.shape == (2, 32)
    assert tok.decode(idx[0].tolist()) == ("the lord " * 20)[:32]
    assert tok.decode(idx[1, :4].tolist()) == "fool" and idx[1, 4:].eq(0).all()


def test_reading_coverage_counts_what_a_window_holds(csv_task):
    """A char tokenizer: tokens = characters, so the window's share is exact arithmetic."""
    _, task = csv_task
    text = "\n".join(pd.concat([task.train, task.val, task.test])["text"])
    tok = train_tokenizer("char", text)
    lengths = task.train["text"].str.len()
    short = int(lengths.median())
    cov = reading_coverage(tok, task, short)
    assert list(cov.index) == ["train", "val", "test"]
    assert cov.loc["train", "passages"] == len(task.train)
    assert cov.loc["train", "median_tokens"] == cov.loc["train", "median_chars"] == lengths.median()
    assert cov.loc["train", "read_whole_pct"] == pytest.approx(100 * (lengths <= short).mean())
    assert cov.loc["train", "chars_read_pct"] == pytest.approx(100 * lengths.clip(upper=short).sum() / lengths.sum())
    whole = reading_coverage(tok, task, int(lengths.max()) + 1)
    assert (whole["read_whole_pct"] == 100).all() and (whole["chars_read_pct"] == 100).all()


def test_encode_task_encodes_a_task_once_per_tokenizer_and_length(csv_task):
    _, task = csv_task
    text = "\n".join(pd.concat([task.train, task.val, task.test])["text"])
    tok = train_tokenizer("char", text)
    first = encode_task(tok, task, 16)
    assert encode_task(train_tokenizer("char", text), task, 16) is first  # an equal tokenizer, built again
    assert encode_task(tok, task, 12) is not first
    idx, lengths = first["val"]
    assert torch.equal(idx, encode_texts(tok, task.val["text"].tolist(), 16)[0]) and int(lengths.max()) <= 16


def test_a_tasks_fingerprint_tells_two_splits_of_the_same_sizes_apart(tmp_path):
    """Another split seed keeps every split's size; the fingerprint (in what a checkpoint keeps of its
    task) differs, so a resume with it is refused rather than trained on other rows."""
    from workbench.run import task_difference

    path = tmp_path / "task.csv"
    pd.DataFrame(tiny_rows(30)).to_csv(path, index=False)
    a, b, again = load_task(path, seed=0), load_task(path, seed=1), load_task(path, seed=0)
    assert a.sizes() == b.sizes()
    assert a.fingerprint(("text", "label")) != b.fingerprint(("text", "label"))
    assert a.fingerprint(("text", "label")) == again.fingerprint(("text", "label"))
    assert a.source == {"spec": str(path.resolve()), "text_col": "text", "label_col": "label", "seed": 0, "max_chars": 600}
    assert task_difference({"name": "x", "n_train": 3}, {"name": "x", "n_train": 3, "fingerprint": "ab"}) == ""  # older run
    assert task_difference({"n_train": 3}, {"n_train": 4}) == "n_train 3 in the run, 4 now"


def test_examples_show_one_passage_of_each_label_with_its_play_where_there_is_one(tmp_path):
    path = tmp_path / "task.csv"
    pd.DataFrame(tiny_rows(30)).to_csv(path, index=False)
    own = load_task(path).examples()
    assert list(own.columns) == ["label", "text"] and own["label"].tolist() == list(LABELS)
    assert list(load_task("genre", max_chars=300).examples(per_label=2).columns) == ["label", "play", "text"]
