"""Tests for workbench.tokenizer: round-trips, errors, save/load, display strings."""

import json
import re

import numpy as np
import pytest
import torch

from workbench import tokenizer as tokmod
from workbench.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    chars_per_token_table,
    load_tokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

TEXT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.

First Citizen:
First, you know Caius Marcius is chief enemy to the people.
"""
SMALL = TEXT * 4  # a few KB: enough for a few hundred merges, trains in milliseconds

TRICKY = [
    "",
    " ",
    "\n",
    "\n\n\n",
    "   leading and trailing   ",
    "tabs\t\tand\r\nwindows line ends\r\n",
    "héllo wörld, ça va?",
    "日本語のテキスト",
    "emoji 😀👍🏽 and a family 👨‍👩‍👧",
    "combining e\u0301 and zero\u200bwidth",
    "\x00\x01 control bytes \x7f",
    "<|endoftext|>",
    "before<|endoftext|>after",
    "x" * 300 + " " * 50 + "y",
    "\n\n**NAME**\n\n  \n",
]


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(SMALL, vocab_size=300)


@pytest.fixture(scope="module")
def char():
    return CharTokenizer.train(TEXT)


def test_char_vocab_is_sorted_set_and_round_trips(char):
    assert char.chars == sorted(set(TEXT))
    assert char.vocab_size == len(set(TEXT))
    assert char.kind == "char"
    for s in (TEXT, "", "Speak, speak.", TEXT[::-1]):
        ids = char.encode(s)
        assert isinstance(ids, list) and len(ids) == len(s)
        assert char.decode(ids) == s


def test_char_decode_accepts_arrays_and_tensors(char):
    ids = char.encode("Speak")
    assert char.decode(np.array(ids)) == "Speak"
    assert char.decode(torch.tensor(ids)) == "Speak"
    assert char.encode_to_array("Speak").dtype == np.uint16


def test_decode_takes_one_id_as_a_sequence_of_one(char, bpe):
    """A single id, e.g. `logits.argmax()` (a 0-d tensor), decodes as its token."""
    for tok in (char, bpe):
        i = tok.encode("S")[0]
        assert tok.decode(torch.tensor(i)) == tok.decode(i) == tok.decode(np.int64(i)) == tok.decode([i]) == "S"
        assert tok.tokens(torch.tensor(i)) == ["S"]
    with pytest.raises(ValueError, match="outside"):
        char.decode(torch.tensor(char.vocab_size))


def test_char_unknown_character_names_it_and_the_fix(char):
    with pytest.raises(ValueError, match="'Z'.*trained on another text .*use the text it was trained on.*bpe tokenizer"):
        char.encode("Zounds")  # e.g. resuming or evaluating a run whose corpus was edited since


def test_a_lone_surrogate_is_one_line_naming_it_not_a_failure_to_save_later(bpe, tmp_path):
    """A string decoded with errors="surrogateescape" holds code points UTF-8 cannot: a tokenizer trained
    on one could not be saved, fingerprinted or handed to the BPE library."""
    text = b"To be\xff".decode("utf-8", errors="surrogateescape")  # "To be\udcff"
    for make in (lambda: CharTokenizer.train(text), lambda: BPETokenizer.train([text] * 5, 300),
                 lambda: bpe.encode(text), lambda: bpe.encode_to_array(text)):
        with pytest.raises(ValueError, match=r"lone surrogate, U\+DCFF, .*errors='replace'"):
            make()
    fixed = CharTokenizer.train(b"To be\xff".decode("utf-8", errors="replace"))  # the fix it names works
    assert load_tokenizer(fixed.save(tmp_path / "tokenizer.json")) == fixed
    assert bpe.encode("To be \U0001F600") == bpe.encode_to_array("To be \U0001F600").tolist()  # a pair is fine


def test_decode_rejects_ids_outside_the_vocabulary(char, bpe):
    with pytest.raises(ValueError, match="outside"):
        char.decode([char.vocab_size])
    with pytest.raises(ValueError, match="outside"):
        bpe.decode([-1])
    for tok in (char, bpe):
        for not_ids in ("First", None):  # not int("F") or "'NoneType' object is not iterable"
            with pytest.raises(ValueError, match="decode takes token ids .*; encode text first"):
                tok.decode(not_ids)


@pytest.mark.parametrize("s", TRICKY)
def test_bpe_round_trips_any_string(bpe, s):
    assert bpe.decode(bpe.encode(s)) == s
    assert bpe.decode(bpe.encode_to_array(s)) == s


def test_bpe_chunked_encoding_equals_whole_text_encoding(monkeypatch):
    # Long texts are cut into chunks for encode_batch; the cuts must not change any id.
    # "\n\n" must be a learned token for this to bite: whole-text GPT-2 pre-tokenization
    # splits "\n\n" before a word into "\n" + "\n", but keeps it whole at a chunk's end.
    tok = BPETokenizer.train(SMALL.replace("\n\n", "\n\n\n\n"), vocab_size=300)
    assert len(tok.encode("\n\n")) == 1
    text = SMALL + "".join(TRICKY) + "\n\nend.\nX \nY\n\n\nZ"
    whole = tok.encode(text)  # short text: one call to the fast tokenizer, no chunks
    monkeypatch.setattr(tokmod, "_CHUNK_CHARS", 7)
    chunked = tok.encode_to_array(text)
    assert chunked.tolist() == whole
    assert tok.decode(chunked) == text


def test_bpe_trained_on_chunks_equals_bpe_trained_on_the_whole_text(monkeypatch):
    # Long training texts reach the Rust trainer in chunks, which it counts in parallel (what keeps
    # training on the whole Shakespeare corpus fast); the cuts must not change a single merge.
    text = SMALL + "".join(TRICKY) + "\n\nend.\nX \nY\n\n\nZ"
    whole = BPETokenizer.train(text, vocab_size=300)  # shorter than a chunk: one piece
    monkeypatch.setattr(tokmod, "_CHUNK_CHARS", 7)
    assert BPETokenizer.train(text, vocab_size=300) == whole


def test_bpe_vocab_size_is_honored_and_eot_exists(bpe):
    assert bpe.vocab_size == 300
    assert bpe.kind == "bpe"
    assert bpe.encode("<|endoftext|>") == [bpe.eot_id]
    assert max(bpe.encode(SMALL)) < 300
    assert bpe.encode_to_array(SMALL).dtype == np.uint16
    # merges were learned: the text takes fewer tokens than bytes
    assert len(bpe.encode(TEXT)) < 0.75 * len(TEXT.encode())


def test_bpe_warns_when_text_is_too_small_for_the_vocab():
    with pytest.warns(UserWarning, match="larger corpus or a smaller vocab_size"):
        tok = BPETokenizer.train("tiny text", vocab_size=5000)
    assert tok.vocab_size < 5000


def test_tokens_are_readable_display_strings(char, bpe):
    assert char.tokens(char.encode("Speak, all\n")) == ["S", "p", "e", "a", "k", ",", " ", "a", "l", "l", "↵"]
    line = "First Citizen:\nSpeak, speak."
    pieces = bpe.tokens(bpe.encode(line))
    assert "".join(pieces) == line.replace("\n", "↵")
    assert " speak" in pieces  # a learned piece keeps its leading space
    assert bpe.tokens([bpe.eot_id]) == ["<|endoftext|>"]


def test_visible_marks_is_the_public_table_tokens_use():
    assert "a\nb\rc\td e".translate(tokmod.VISIBLE_MARKS) == "a↵b␍c⇥d e"
    tok = CharTokenizer.train("a\nb\rc\td e")
    assert "".join(tok.tokens(tok.encode("a\nb\rc\td e"))) == "a↵b␍c⇥d e"


def test_chars_per_token_table_counts_tokens_of_each_text(char, bpe):
    texts = {"line": "First Citizen:\nSpeak, speak.", "all": TEXT}
    table = chars_per_token_table({"char": char, "bpe": bpe}, texts).set_index("tokenizer")
    assert list(table.columns) == ["vocab_size", "line_tokens", "line_chars_per_token", "all_tokens",
                                   "all_chars_per_token"]
    assert table.loc["char", "all_tokens"] == len(TEXT) and table.loc["char", "all_chars_per_token"] == 1.0
    assert table.loc["bpe", "line_tokens"] == len(bpe.encode(texts["line"]))
    assert table.loc["bpe", "all_chars_per_token"] == len(TEXT) / len(bpe.encode(TEXT)) > 1.5  # merges pay off
    assert table.loc["bpe", "vocab_size"] == bpe.vocab_size


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_and_load_preserve_encoding_and_fingerprint(kind, tmp_path, char, bpe):
    tok = {"char": char, "bpe": bpe}[kind]
    path = tok.save(tmp_path / "sub" / "tokenizer.json")
    assert json.loads(path.read_text(encoding="utf-8"))["kind"] == kind  # plain JSON
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok)
    assert loaded.fingerprint == tok.fingerprint and loaded == tok
    assert loaded.encode(TEXT) == tok.encode(TEXT)
    assert load_tokenizer(tok.to_dict()) == tok
    assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))) == tok


def test_fingerprint_is_hex_sha256_and_tells_tokenizers_apart(char, bpe):
    assert len(char.fingerprint) == 64 and set(char.fingerprint) <= set("0123456789abcdef")
    assert CharTokenizer.train(TEXT).fingerprint == char.fingerprint  # deterministic
    assert CharTokenizer.train(TEXT + "Z").fingerprint != char.fingerprint
    assert BPETokenizer.train(SMALL, vocab_size=300) == bpe  # BPE training is deterministic
    assert BPETokenizer.train(SMALL, vocab_size=290) != bpe
    assert char != bpe


def test_train_tokenizer_dispatches_and_validates():
    assert isinstance(train_tokenizer("char", [TEXT, "Z"]), CharTokenizer)
    assert "Z" in train_tokenizer("char", [TEXT, "Z"]).chars
    assert isinstance(train_tokenizer("bpe", [TEXT, TEXT], vocab_size=260), BPETokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer kind 'word'.*char, bpe"):
        train_tokenizer("word", TEXT)
    with pytest.raises(ValueError, match="at least 257"):
        train_tokenizer("bpe", TEXT, vocab_size=256)
    with pytest.raises(ValueError, match="integer vocab_size"):
        train_tokenizer("bpe", TEXT)
    with pytest.raises(ValueError, match="empty text"):
        train_tokenizer("char", "")


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("text", [None, 5, b"To be"])
def test_train_tokenizer_refuses_a_text_that_is_not_text(kind, text):
    name = type(text).__name__
    with pytest.raises(TypeError, match=rf"^the training text is {name}, not text; pass a string or an iterable of strings"):
        train_tokenizer(kind, text, vocab_size=300)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_train_tokenizer_refuses_an_item_that_is_not_a_string(kind):
    with pytest.raises(TypeError, match=r"^training text item 1 is NoneType, not a string; pass a string"):
        train_tokenizer(kind, [TEXT, None], vocab_size=300)
    with pytest.raises(TypeError, match=r"^training text item 2 is int, not a string"):
        train_tokenizer(kind, (t for t in ["ab", "cd", 3]), vocab_size=300)  # a generator is checked as it is read


def test_load_errors_name_the_problem(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_tokenizer(bad)
    with pytest.raises(ValueError, match="expected kind"):
        load_tokenizer({"kind": "word"})
    # a folder (e.g. a run's model/) is not said to be missing: the error points at the file inside it
    with pytest.raises(FileNotFoundError, match="is a directory, not a file; pass the path of a saved tokenizer.json"):
        load_tokenizer(tmp_path)
    train_tokenizer("char", "abc").save(tmp_path / "tokenizer.json")
    inside = re.escape(f"is a directory, not a file; pass {tmp_path / 'tokenizer.json'}") + "$"
    with pytest.raises(FileNotFoundError, match=inside):
        load_tokenizer(tmp_path)


WRONG_SHAPES = [None, [], "char", {}, {"kind": "char"}, {"kind": "char", "chars": 5}, {"kind": "char", "chars": []},
                {"kind": "bpe"}, {"kind": "bpe", "tokenizer": {}}, {"kind": "bpe", "tokenizer": None}]


@pytest.mark.parametrize("d", WRONG_SHAPES)
def test_a_tokenizer_of_another_shape_is_one_line_naming_the_fix(d, tmp_path):
    """JSON that parses but is not what Tokenizer.save writes (a damaged tokenizer.json): a one-line
    ValueError, naming the file when loaded from one, never a TypeError or KeyError."""
    fix = ("; expected kind 'char' or 'bpe' as Tokenizer.save writes it: use the tokenizer.json saved with this "
           "checkpoint")
    for load in (tokenizer_from_dict, load_tokenizer):
        if load is load_tokenizer and isinstance(d, str):  # a string is a path to it
            continue
        with pytest.raises(ValueError) as info:
            load(d)
        message = str(info.value)
        assert message.startswith("not a workbench tokenizer (") and message.endswith(fix) and "\n" not in message
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_tokenizer(path)
    assert str(info.value).startswith(f"tokenizer file {path} is not a workbench tokenizer (")
    assert str(info.value).endswith(fix)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_to_hf_is_the_same_tokenizer_in_transformers(tmp_path, kind):
    """Saved beside an exported model, AutoTokenizer loads it: the same ids and the same text back,
    spaces, tabs, CR/LF and accents included (transformers' space cleanup off)."""
    transformers = pytest.importorskip("transformers")
    text = "KING:\nGood  night, sweet lord.\tÉté — ok\r\n  end "
    tok = train_tokenizer(kind, text * 50, 290) if kind == "bpe" else train_tokenizer(kind, text)
    tok.to_hf().save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ids = hf(text)["input_ids"]
    assert ids == tok.encode(text) and hf.decode(ids) == text
    assert (hf.eos_token == "<|endoftext|>") == (kind == "bpe")


def test_a_corpus_tokenizer_spells_held_out_text_and_learns_bpe_merges_from_training_text_only(tmp_path):
    """A character only the last 10% shows (the validation text) is in the char vocabulary, as nanoGPT's,
    so held-out text encodes; BPE's merges come from the training text alone."""
    from workbench.data import load_corpus
    from workbench.tokenizer import train_corpus_tokenizer

    path = tmp_path / "notes.txt"
    path.write_text("the cat sat on the mat\n" * 90 + "a café, a naïve zoo\n" * 10, encoding="utf-8")
    corpus = load_corpus(path)
    assert "é" in corpus.splits["val"] and "é" not in corpus.train_text
    char = train_corpus_tokenizer("char", corpus)
    assert char.decode(char.encode(corpus.splits["val"])) == corpus.splits["val"]
    with pytest.raises(ValueError, match="not in the char tokenizer's vocabulary"):  # from the training text alone
        train_tokenizer("char", corpus.train_text).encode(corpus.splits["val"])
    bpe = train_corpus_tokenizer("bpe", corpus, vocab_size=300)
    assert bpe.to_dict() == train_tokenizer("bpe", corpus.train_text, vocab_size=300).to_dict()
