"""Tokenizers: turn text into integer ids and back, two ways.

- ``CharTokenizer`` maps each character of the training text to an id (the nanoGPT
  ``shakespeare_char`` set-up): tiny vocabulary, long sequences, easy to read.
- ``BPETokenizer`` is GPT-2 style byte-level BPE trained with Hugging Face ``tokenizers``:
  every string round-trips, whatever its characters, because the base alphabet is the
  256 bytes.

Both share one interface (``Tokenizer``): ``encode``/``decode``, ``tokens`` (display strings
for plot axes), ``to_dict``/``save``/``load_tokenizer`` (plain JSON, never pickle) and a
``fingerprint`` used as a cache key for encoded data.

Typical use::

    tok = train_corpus_tokenizer("bpe", corpus, vocab_size=2048)  # or train_tokenizer("bpe", text, 2048)
    ids = tok.encode("If music be the food of love")
    tok.save("runs/x/tokenizer.json"); tok2 = load_tokenizer("runs/x/tokenizer.json")
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

from .config import MIN_BPE_VOCAB, TOKENIZERS

if TYPE_CHECKING:
    import pandas as pd

EOT = "<|endoftext|>"

# How tokens() makes invisible characters visible on plot axes. Spaces stay spaces (a BPE
# piece " the" keeps its leading space, which is what the model sees); a newline becomes
# "↵" so a label is never blank or two lines tall. A corpus that contains "↵" itself shows
# the same label for both; that ambiguity only affects display, never encode/decode.
# Public: the attention figures' axis labels (viz.attention.visible_token) use the same marks.
VISIBLE_MARKS = str.maketrans({"\n": "↵", "\r": "␍", "\t": "⇥"})

# Texts longer than this are encoded in chunks with encode_batch (parallel in Rust).
_CHUNK_CHARS = 1 << 16
# Where cutting the text changes no ids. BPE never merges across GPT-2 pre-tokens, and a
# lone "\n" between two non-space characters is a pre-token of its own wherever the text ends
# (letters, digits, punctuation and contractions never take a "\n" prefix). A longer run such
# as "\n\n" is NOT safe: the pattern \s+(?!\S) splits it "\n" + "\n" before a word but keeps
# it whole at the end of a string. (Python's \S is a subset of the Rust regex's \S, so a cut
# Python calls safe is safe there too.)
_SAFE_CUT = re.compile(r"(?<=\S\n)(?=\S)")
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone one: Python strings hold pairs as one code point


def _canonical_json(d: dict) -> str:
    return json.dumps(d, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id: uint16 below 65,536 ids, else uint32."""
    return np.dtype(np.uint16 if vocab_size < 2**16 else np.uint32)


def _as_id_list(ids: Any) -> list[int]:
    """Accept a list, a 1-D numpy array or a 1-D torch tensor of ids, or one id (an int, or a 0-d
    array or tensor such as ``logits.argmax()``) as a sequence of one."""
    if hasattr(ids, "tolist"):  # numpy arrays and torch tensors; a 0-d one (or a numpy scalar) gives an int
        ids = ids.tolist()
    if isinstance(ids, int):
        ids = [ids]
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):  # text, None: not ids
        raise ValueError(f"decode takes token ids (a list, array or tensor), got {type(ids).__name__}; "
                         "encode text first")
    ids = list(ids)
    if ids and isinstance(ids[0], list):
        raise ValueError("decode takes one sequence of ids (1-D); decode each row of a batch separately")
    return [int(i) for i in ids]


def check_unicode(text: str, what: str = "the text") -> str:
    """`text`, or a one-line ValueError if it holds a lone surrogate: not a character, so neither
    UTF-8 (a saved tokenizer, the BPE library) nor a fingerprint can hold it. Files are read strictly,
    so only a Python string (decoded with errors="surrogateescape", say) brings one."""
    if m := _SURROGATE.search(text):
        raise ValueError(f"{what} holds a lone surrogate, U+{ord(m.group()):04X}, which is not a character; "
                         "remove it, or decode the bytes with errors='replace'")
    return text


def _training_texts(text: Any) -> Iterable[str]:
    """A training text as an iterable of strings, or a one-line TypeError naming what to pass. The
    items of an iterable are checked as they are read, so a generator is still read only once."""
    if isinstance(text, str):
        return [text]
    if text is None or isinstance(text, (bytes, bytearray)) or not isinstance(text, Iterable):
        raise TypeError(f"the training text is {type(text).__name__}, not text; pass a string or an iterable of "
                        "strings, e.g. corpus.train_text (decode bytes first)")

    def checked():
        for i, chunk in enumerate(text):
            if not isinstance(chunk, str):
                raise TypeError(f"training text item {i} is {type(chunk).__name__}, not a string; pass a string "
                                "or an iterable of strings (str(x) each item, or drop the missing ones)")
            yield chunk
    return checked()


class Tokenizer:
    """The interface both tokenizers share. Subclasses set ``kind`` and implement
    ``vocab_size``, ``encode``, ``decode``, ``_piece`` and ``to_dict``."""

    kind: str = ""

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Text to ids.

        Args:
            text: any string (for ``CharTokenizer``: only characters of its vocabulary).
        Returns:
            a list of ints, one per token. See ``encode_to_array`` for multi-MB text.
        """
        raise NotImplementedError

    def encode_to_array(self, text: str) -> np.ndarray:
        """Like ``encode`` but returns a 1-D numpy array of dtype ``token_dtype(vocab_size)``
        (uint16 for vocabularies under 65,536), which is how data.py stores big corpora."""
        return np.asarray(self.encode(text), dtype=token_dtype(self.vocab_size))

    def decode(self, ids: Any) -> str:
        """Ids (list, 1-D numpy array or 1-D tensor; or one id, an int or 0-d tensor) back to text;
        ``decode(encode(s)) == s``."""
        raise NotImplementedError

    def _piece(self, i: int) -> str:
        """The text of token ``i`` on its own."""
        raise NotImplementedError

    def tokens(self, ids: Any) -> list[str]:
        """Display strings, one per id, for plot axis labels.

        Each id is decoded on its own, so a BPE piece shows its real text (" the"); newline,
        carriage return and tab are shown as "↵", "␍", "⇥"; spaces stay spaces. A BPE piece
        that is only part of a multi-byte character shows as "�".

        Args:
            ids: a sequence of ids (list, 1-D array or tensor).
        Returns:
            a list of ``len(ids)`` strings.
        """
        return [self._piece(i).translate(VISIBLE_MARKS) for i in self._check_ids(ids)]

    def _check_ids(self, ids: Any) -> list[int]:
        ids = _as_id_list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"token id {bad[0]} is outside this {self.kind} tokenizer's vocabulary "
                f"(0..{self.vocab_size - 1}); decode with the tokenizer the model was trained with"
            )
        return ids

    def to_dict(self) -> dict:
        """Everything needed to rebuild the tokenizer, as plain JSON-able data."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON of ``to_dict()``: equal tokenizers, equal fingerprints."""
        return hashlib.sha256(_canonical_json(self.to_dict()).encode("utf-8")).hexdigest()

    def to_hf(self):
        """The same tokenizer as a Hugging Face `PreTrainedTokenizerFast` (same ids, same decoded
        text; no cleanup of spaces): `save_pretrained` it beside an exported model
        (`GPT.export_hf`) and `AutoTokenizer.from_pretrained` loads it."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=self._hf_tokenizer(), clean_up_tokenization_spaces=False,
                                       **self._hf_special_tokens())

    def _hf_tokenizer(self) -> HFTokenizer:
        raise NotImplementedError

    def _hf_special_tokens(self) -> dict[str, str]:
        return {}

    def save(self, path: str | Path) -> Path:
        """Write ``to_dict()`` as a JSON file (parents created). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One id per character; the vocabulary is the sorted set of the training text's characters."""

    kind = "char"

    def __init__(self, chars: Iterable[str]):
        self.chars: list[str] = sorted(set(chars))
        check_unicode("".join(self.chars), "the char tokenizer's training text")
        if not self.chars:
            raise ValueError("a char tokenizer needs at least one character; train it on non-empty text")
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("a char tokenizer's vocabulary must be single characters; rebuild it with CharTokenizer.train")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        # Code points in id order (sorted strings of length 1 sort by code point), so
        # np.searchsorted maps a whole array of code points to ids at once.
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def train(cls, text: str | Iterable[str]) -> CharTokenizer:
        """Build the vocabulary from ``text`` (a string or an iterable of strings)."""
        chars: set[str] = set()
        for chunk in _training_texts(text):
            chars.update(chunk)
        if not chars:
            raise ValueError("cannot train a char tokenizer on empty text; pass the corpus's training text")
        return cls(chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode_to_array(self, text: str) -> np.ndarray:
        # Vectorized: code points via UTF-32, then a binary search into the sorted vocabulary.
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = np.searchsorted(self._codepoints, cps)
        known = self._codepoints[np.minimum(ids, len(self.chars) - 1)] == cps
        if not known.all():
            unknown = sorted({chr(c) for c in cps[~known][:10_000].tolist()})
            shown = ", ".join(repr(c) for c in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            raise ValueError(
                f"text has characters not in the char tokenizer's vocabulary ({shown}): it was trained on "
                "another text (a corpus edited since its run trained?); use the text it was trained on, or "
                "retrain the tokenizer on a corpus that contains them, or use the bpe tokenizer"
            )
        return ids.astype(token_dtype(self.vocab_size))

    def encode(self, text: str) -> list[int]:
        return self.encode_to_array(text).tolist()

    def decode(self, ids: Any) -> str:
        return "".join(self.chars[i] for i in self._check_ids(ids))

    def _piece(self, i: int) -> str:
        return self.chars[i]

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": list(self.chars)}

    def _hf_tokenizer(self) -> HFTokenizer:
        # every character its own piece (newlines too), looked up as a word; decoded by joining the pieces
        tok = HFTokenizer(models.WordLevel(dict(self.stoi), unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return tok


def _safe_chunks(text: str) -> Iterator[str]:
    """Cut ``text`` into pieces of about ``_CHUNK_CHARS`` characters at safe BPE boundaries only."""
    size, start = _CHUNK_CHARS, 0
    while start < len(text):
        if len(text) - start <= size:
            yield text[start:]
            return
        m = _SAFE_CUT.search(text, start + size)
        end = m.start() if m else len(text)
        yield text[start:end]
        start = end


class BPETokenizer(Tokenizer):
    """GPT-2 style byte-level BPE, a thin wrapper around a Hugging Face ``tokenizers.Tokenizer``.

    No normalizer and no post-processor, so ``decode(encode(s)) == s`` for every string.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer: HFTokenizer):
        self._tok = hf_tokenizer
        eot_id = self._tok.token_to_id(EOT)
        if eot_id is None:
            raise ValueError(f"this BPE tokenizer has no {EOT} token; train it with BPETokenizer.train")
        self.eot_id: int = eot_id

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int) -> BPETokenizer:
        """Train byte-level BPE on ``texts``.

        Args:
            texts: a string or an iterable of strings (e.g. documents).
            vocab_size: total ids including the 256 byte tokens and ``<|endoftext|>`` (>= 257).
        Returns:
            the trained tokenizer; its ``vocab_size`` is smaller than asked (with a warning)
            when the text is too small to learn that many merges.
        """
        texts = _training_texts(texts)
        _check_bpe_vocab_size(vocab_size)
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[EOT],
            show_progress=False,
        )
        # Feeding chunks instead of one huge string lets the Rust side count words in parallel;
        # the cuts are at pre-token boundaries, so the counts are the same.
        tok.train_from_iterator((c for t in texts for c in _safe_chunks(check_unicode(t, "the BPE training text"))),
                                trainer=trainer)
        out = cls(tok)
        if out.vocab_size < vocab_size:
            warnings.warn(
                f"BPE learned only {out.vocab_size} of the requested {vocab_size} tokens because the "
                "training text is small; use a larger corpus or a smaller vocab_size",
                stacklevel=2,
            )
        return out

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        if len(text) <= _CHUNK_CHARS:
            try:
                return self._tok.encode(text, add_special_tokens=False).ids
            except TypeError:  # the library's word for a lone surrogate: name it (checked only then, off the hot path)
                check_unicode(text, "the text to encode")
                raise
        return self.encode_to_array(text).tolist()

    def encode_to_array(self, text: str) -> np.ndarray:
        dtype = token_dtype(self.vocab_size)
        try:
            encodings = self._tok.encode_batch(list(_safe_chunks(text)), add_special_tokens=False)
        except TypeError:  # as in `encode`
            check_unicode(text, "the text to encode")
            raise
        if not encodings:
            return np.empty(0, dtype=dtype)
        return np.concatenate([np.asarray(e.ids, dtype=dtype) for e in encodings])

    def decode(self, ids: Any) -> str:
        # skip_special_tokens=False: a literal "<|endoftext|>" in the text must come back too.
        return self._tok.decode(self._check_ids(ids), skip_special_tokens=False)

    def _piece(self, i: int) -> str:
        return self._tok.decode([i], skip_special_tokens=False)

    def to_dict(self) -> dict:
        return {"kind": "bpe", "tokenizer": json.loads(self._tok.to_str())}

    def _hf_tokenizer(self) -> HFTokenizer:
        return HFTokenizer.from_str(self._tok.to_str())  # a copy

    def _hf_special_tokens(self) -> dict[str, str]:
        return {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}  # as GPT-2's


def _check_bpe_vocab_size(vocab_size: int | None) -> int:
    if vocab_size is None or isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise ValueError(f"the bpe tokenizer needs an integer vocab_size (got {vocab_size!r}); pass e.g. vocab_size=2048")
    if vocab_size < MIN_BPE_VOCAB:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for byte-level BPE: it needs at least {MIN_BPE_VOCAB} "
            f"(256 bytes + {EOT}); set vocab_size to {MIN_BPE_VOCAB} or more"
        )
    return int(vocab_size)


def train_tokenizer(kind: str, text: str | Iterable[str], vocab_size: int | None = None) -> Tokenizer:
    """Train a tokenizer of the given kind.

    Args:
        kind: "char" or "bpe".
        text: the training text (a string or an iterable of strings); for a corpus,
            `train_corpus_tokenizer` chooses it (BPE: the train split; char: the whole corpus).
        vocab_size: required for "bpe" (>= 257); ignored for "char", whose vocabulary is the
            set of characters in ``text``.
    Returns:
        a ``CharTokenizer`` or ``BPETokenizer``.
    """
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, _check_bpe_vocab_size(vocab_size))
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(TOKENIZERS)}")


def train_corpus_tokenizer(kind: str, corpus: Any, vocab_size: int | None = None) -> Tokenizer:
    """The tokenizer a run trains for `corpus` (a `data.Corpus`): BPE learns its merges from the training
    text only; a char vocabulary is the character set of the whole corpus, as nanoGPT's, so held-out
    text always encodes (a character only the validation text has keeps an untrained embedding).

    Args:
        kind: "char" or "bpe"; vocab_size: for "bpe".
    """
    return train_tokenizer(kind, corpus.train_text if kind == "bpe" else corpus.text, vocab_size)


def tokenizer_from_dict(d: Any) -> Tokenizer:
    """Rebuild a tokenizer from ``Tokenizer.to_dict()`` output.

    Raises:
        ValueError: ``d`` is anything else (another kind, not a dict, a missing or damaged field), one line.
    """
    kind = d.get("kind") if isinstance(d, dict) else None
    problem = f"kind={kind!r}" if isinstance(d, dict) else f"got {d!r:.60}"
    try:
        if kind == "char":
            return CharTokenizer(d["chars"])
        if kind == "bpe":
            return BPETokenizer(HFTokenizer.from_str(json.dumps(d["tokenizer"])))
    except Exception as e:  # tokenizers raises a bare Exception for a tokenizer it cannot read
        problem = f"a {kind} tokenizer with a missing or damaged field: {type(e).__name__}: " + " ".join(str(e).split())
    raise ValueError(f"not a workbench tokenizer ({problem}); expected kind 'char' or 'bpe' as Tokenizer.save "
                     "writes it: use the tokenizer.json saved with this checkpoint")


def load_tokenizer(path_or_dict: str | Path | dict) -> Tokenizer:
    """Load a tokenizer saved with ``Tokenizer.save`` (JSON, never pickle), or rebuild one from its dict.

    Args:
        path_or_dict: path of the JSON file, or the dict itself.
    Returns:
        the tokenizer.
    """
    if not isinstance(path_or_dict, (str, os.PathLike)):  # a dict, or JSON of another shape (null, a list)
        return tokenizer_from_dict(path_or_dict)
    path = Path(path_or_dict)
    if path.is_dir():  # e.g. a run's model/ folder: the tokenizer is one file inside it
        inside = path / "tokenizer.json"
        fix = f"pass {inside}" if inside.is_file() else "pass the path of a saved tokenizer.json file"
        raise FileNotFoundError(f"tokenizer path {path} is a directory, not a file; {fix}")
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist; train one or pass the path of a saved tokenizer.json")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"tokenizer file {path} is not valid JSON ({e}); re-save it with Tokenizer.save") from None
    try:
        return tokenizer_from_dict(d)
    except ValueError as e:
        raise ValueError(f"tokenizer file {path} is {e}") from None


def tokenization_table(text: str, tokenizers: dict[str, Tokenizer]) -> pd.DataFrame:
    """The same text through several tokenizers, one row per token: tokenizer, position, token, id."""
    import pandas as pd

    rows = []
    for name, tok in tokenizers.items():
        ids = tok.encode(text)
        rows += [{"tokenizer": name, "position": i, "token": t, "id": j}
                 for i, (t, j) in enumerate(zip(tok.tokens(ids), ids))]
    return pd.DataFrame(rows)


def chars_per_token_table(tokenizers: dict[str, Tokenizer], texts: dict[str, str]) -> pd.DataFrame:
    """How many characters each tokenizer packs into a token, on each named text.

    Args:
        tokenizers: name -> tokenizer.
        texts: label -> text.
    Returns:
        one row per tokenizer: `tokenizer`, `vocab_size`, and per text `<label>_tokens` and
        `<label>_chars_per_token` (characters / tokens; 1.0 for a character tokenizer).
    """
    import pandas as pd

    rows = []
    for name, tok in tokenizers.items():
        row = {"tokenizer": name, "vocab_size": tok.vocab_size}
        for label, text in texts.items():
            n = len(tok.encode_to_array(text))
            row[f"{label}_tokens"] = n
            row[f"{label}_chars_per_token"] = len(text) / max(n, 1)
        rows.append(row)
    return pd.DataFrame(rows)
