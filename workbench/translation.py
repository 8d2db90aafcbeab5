"""Translation tasks: pairs of source and target text in disjoint splits, and their token ids.

    task = load_pairs("dates")                        # dates as ten locales write them -> ISO 8601
    task = load_pairs("pairs.tsv", source_col="en", target_col="fr")   # a user's TSV/CSV/JSONL
    task.train, task.val, task.test                   # DataFrames: source, target, locale (+ format, ...)
    tok = train_pair_tokenizer(task)                  # characters (CJK included) + <pad> <bos> <eos> <unk>
    src, tgt = encode_pairs(tok, task.train)          # (N, S) and (N, T+2) padded ids

The built-in task needs no download: `babel`'s CLDR data writes each date the way a locale
writes it ("jeudi 26 novembre 2026", "26.11.26", "2026年11月26日星期四") and the target is
ISO `2026-11-26`. Day, month and year come in a different order in different locales, so the
alignment a model learns is not a diagonal. Splits are disjoint sets of whole years, one per
decade each for validation and test (a test date's year is never seen in training, see
`split_of_year`), every row keeps its `locale` and
`format` for per-locale scores, and where the source writes the month as a word its character
span (`month_start`, `month_end`) is recorded, so the cross-attention of the month digits can be
measured against it.

A user's file is split 80/10/10 at random (seeded) unless it has a `split` column; bad input
raises one ValueError naming the fix, as the classification tables of `workbench.tasks` do.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .data import SPLITS, TABLE_FILES, SplitFrames, read_table, require_columns
from .tokenizer import BPETokenizer, CharTokenizer, Tokenizer, tokenizer_from_dict

DATE_LOCALES = ("en", "fr", "de", "es", "it", "pt", "nl", "ru", "zh", "ja")
DATE_FORMATS = ("full", "long", "medium", "short")
DATE_YEARS = (1960, 2039)  # inclusive; inside it a two-digit year names one century (60-99: 19xx, 00-39: 20xx)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train/val/test of a user file without a `split` column
MIN_ROWS = 10  # a user file needs at least this many pairs (about one per validation and test split)
UNKNOWN_LOCALE = "unknown"  # the locale of a user file's row whose locale cell is empty or null

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(len(SPECIALS))


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


@dataclass
class PairTask(SplitFrames):
    """A translation task: source/target pairs in disjoint train/val/test splits.

    Attributes:
        name: "dates" or the file's name.
        train, val, test: DataFrames with columns ``source``, ``target`` and ``locale`` (str; a
            user file without a locale column has "all", a row with an empty one "unknown"), plus
            ``date``, ``format``, ``month_start`` and ``month_end`` for the date task (-1 where the
            month is a number).
        source: the arguments of `load_pairs` that load it again (None for a task built otherwise);
            a training run keeps them, so a bare ``seq2seq-train --resume`` reloads the same task.
    """

    name: str
    train: pd.DataFrame = field(repr=False)
    val: pd.DataFrame = field(repr=False)
    test: pd.DataFrame = field(repr=False)
    source: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"PairTask({self.name!r}, {self.sizes()})"

    def info(self) -> dict[str, Any]:
        """What identifies the task in a checkpoint: its name, split sizes and rows (`fingerprint`)."""
        return {"name": self.name, **{f"n_{s}": len(self.split(s)) for s in SPLITS},
                "fingerprint": self.fingerprint(("source", "target"))}

    def examples(self, per_locale: int = 1, split: str = "train", seed: int = 0) -> pd.DataFrame:
        """A few rows of each locale of `split`, for a look at the task."""
        df = self.split(split)
        picked = [g.sample(min(len(g), per_locale), random_state=seed) for _, g in df.groupby("locale", sort=False)]
        return pd.concat(picked)[["locale", "source", "target"]].reset_index(drop=True)

    def locale_counts(self) -> pd.DataFrame:
        """Rows of each locale in each split.

        Returns:
            DataFrame indexed by split (train, val, test), one column per locale, NaN where
            a split has no row of that locale.
        """
        return self.counts("locale").T


def split_of_year(year: int) -> str:
    """The split a date's year belongs to: by (tens digit + units digit) % 10 -- 7 is test, 3 validation,
    the rest train.

    Whole years, one per decade for each held-out split (test: 1961, 1970, 1989, 1998, 2007, 2016, 2025,
    2034), so no test date's year -- nor its two-digit form -- is ever trained on, while every digit is
    still trained in every position of the year. (Holding out every year ending in 7 would ask the model
    to write a final "7" it never wrote: a small model then copies the digit wrongly, which measures
    that gap rather than the task.)
    """
    return {7: "test", 3: "val"}.get((year // 10 + year) % 10, "train")


@lru_cache(maxsize=None)
def _month_names(locale: str) -> tuple[tuple[str, ...], ...]:
    """Per month 1..12 (index 0 unused), every word CLDR uses for it in `locale`, longest first."""
    from babel.dates import get_month_names

    names: list[tuple[str, ...]] = [()]
    for m in range(1, 13):
        words = {get_month_names(width, context, locale)[m] for width in ("wide", "abbreviated")
                 for context in ("format", "stand-alone")}
        names.append(tuple(sorted((w for w in words if not any(ch.isdigit() for ch in w)), key=len, reverse=True)))
    return tuple(names)


def month_span(source: str, month: int, locale: str) -> tuple[int, int]:
    """Character span [start, end) of the month's name in `source`, or (-1, -1) when it is written
    as a number (short formats, and Chinese/Japanese "11月", whose month names are digits)."""
    for word in _month_names(locale)[month]:  # a whole word: Italian "mar" (March) is not inside "martedì"
        m = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", source, flags=re.IGNORECASE)
        if m:
            return m.start(), m.end()
    return -1, -1


def month_probe(rows: pd.DataFrame) -> pd.Series:
    """The first row whose source writes the month as a word (`month_start` >= 0): a sentence whose
    cross-attention can show the month digits looking at the month's name.

    Args:
        rows: pairs of the date task (with a month_start column), e.g. `task.test`.
    Returns:
        that row (source, target, locale, format, date, month_start, month_end).
    """
    if "month_start" not in rows.columns:
        raise ValueError("rows have no month_start column; pass rows of the date task (load_pairs(\"dates\"))")
    named = rows[rows["month_start"] >= 0]
    if named.empty:
        raise ValueError("no row writes its month as a word; draw more rows or include a long or full date format")
    return named.iloc[0]


def format_dates(dates: Sequence[dt.date], locales: Sequence[str], formats: Sequence[str]) -> pd.DataFrame:
    """Each date written by babel in the given locale and format, beside its ISO form.

    Args:
        dates, locales, formats: N each (one row per triple).
    Returns:
        DataFrame with columns source, target (YYYY-MM-DD), locale, format, date, month_start, month_end.
    """
    from babel.dates import format_date
    from babel import Locale

    parsed = {loc: Locale.parse(loc) for loc in set(locales)}
    rows = []
    for d, loc, fmt in zip(dates, locales, formats):
        source = format_date(d, fmt, locale=parsed[loc])
        start, end = month_span(source, d.month, loc)
        rows.append({"source": source, "target": d.isoformat(), "locale": loc, "format": fmt, "date": d.isoformat(),
                     "month_start": start, "month_end": end})
    return pd.DataFrame(rows, columns=["source", "target", "locale", "format", "date", "month_start", "month_end"])


def date_task(n_train: int = 20_000, n_val: int = 500, n_test: int = 1_000, locales: Sequence[str] = DATE_LOCALES,
              formats: Sequence[str] = DATE_FORMATS, seed: int = 0) -> PairTask:
    """The built-in task: dates as people in many locales write them -> ISO 8601.

    Each row draws a date of its split's years (`split_of_year`, within `DATE_YEARS`), a locale and
    a format uniformly at random from a generator seeded by `seed` and the split, so the task is the
    same on every machine. A source that repeats within a split is dropped (its first row kept);
    the split can hence be a little smaller than asked (zh writes medium like long).

    Args:
        n_train, n_val, n_test: rows drawn per split.
        locales: CLDR locale codes babel knows, e.g. ("en", "de").
        formats: among "full", "long", "medium", "short".
        seed: the draw.
    Returns:
        PairTask "dates".
    """
    check_locales(locales)
    bad = [f for f in formats if f not in DATE_FORMATS]
    if bad or not formats:
        raise ValueError(f"date format(s) {bad or 'none'} given; pick from {', '.join(DATE_FORMATS)}")
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")
    first, last = dt.date(DATE_YEARS[0], 1, 1), dt.date(DATE_YEARS[1], 12, 31)
    days = np.array([first + dt.timedelta(days=i) for i in range((last - first).days + 1)])
    in_split = np.array([split_of_year(d.year) for d in days])
    parts = {}
    for k, (split, n) in enumerate(zip(SPLITS, (n_train, n_val, n_test))):
        rng = np.random.default_rng([seed, k])
        pool = days[in_split == split]
        df = format_dates(pool[rng.integers(len(pool), size=n)], [locales[i] for i in rng.integers(len(locales), size=n)],
                          [formats[i] for i in rng.integers(len(formats), size=n)])
        parts[split] = df.drop_duplicates("source").reset_index(drop=True)
    return PairTask("dates", parts["train"], parts["val"], parts["test"])


def random_split(n: int, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> np.ndarray:
    """"train" | "val" | "test" for n rows: a seeded permutation, round(n * fraction) rows to val and to test."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    out = np.full(n, "train", dtype=object)
    out[order[:n_val]] = "val"
    out[order[n_val : n_val + n_test]] = "test"
    return out


def file_task(path: str | Path, source_col: str = "source", target_col: str = "target", seed: int = 0) -> PairTask:
    """A translation task from a user's TSV, CSV or JSONL file of pairs.

    A ``split`` column (train/val/test) places the rows, otherwise `random_split` makes a seeded
    80/10/10 split; a ``locale`` column is kept for per-locale scores ("all" without one, "unknown"
    where a row's is empty or null). Each problem raises one ValueError naming the fix: a missing
    column (the available ones are listed), an empty source or target, fewer than `MIN_ROWS` pairs,
    a bad split value or an empty split.

    Args:
        path: a .tsv, .csv or .jsonl file (UTF-8).
        source_col, target_col: column names.
        seed: for the 80/10/10 split.
    Returns:
        PairTask named after the file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"task file {path} is a folder; pass --task dates or a .tsv/.csv/.jsonl file of pairs")
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist; pass --task dates or a .tsv/.csv/.jsonl file of pairs")
    if path.suffix.lower() not in TABLE_FILES:
        raise ValueError(f"task file {path} is not .tsv, .csv or .jsonl; save it as one of those")
    df = read_table(path)
    require_columns(df, (source_col, target_col), "pass --source-col / --target-col naming the right ones", name=str(path))
    # a row without a locale is grouped as "unknown": a null one would drop out of the per-locale scores
    locale = "all"
    if "locale" in df.columns:
        locale = df["locale"].fillna("").astype(str).str.strip().replace("", UNKNOWN_LOCALE)
        if "all" in set(locale) and locale.nunique() > 1:  # per_locale_scores' total row would replace its scores
            raise ValueError(f"{path}: the locale 'all' names the total row of the per-locale scores; rename "
                             "that locale in the locale column")
    rows = pd.DataFrame({"source": df[source_col].fillna("").astype(str).str.strip(),
                         "target": df[target_col].fillna("").astype(str).str.strip(), "locale": locale})
    for col in ("source", "target"):
        empty = rows.index[rows[col] == ""]
        if len(empty):
            raise ValueError(f"{path}: {len(empty)} row(s) have an empty {col} (first: row {empty[0]}); fill or remove them")
    if len(rows) < MIN_ROWS:
        raise ValueError(f"{path} has {len(rows)} pair(s); a translation task needs at least {MIN_ROWS} "
                         "(a few thousand to learn anything); add rows")
    if "split" in df.columns:
        split = df["split"].astype(str).str.strip().str.lower()
        bad = sorted(set(split) - set(SPLITS))
        if bad:
            raise ValueError(f"{path}: split column has value(s) {', '.join(map(repr, bad[:5]))}; "
                             "use only train, val and test (or drop the column for an 80/10/10 split)")
    else:
        split = pd.Series(random_split(len(rows), seed), index=rows.index)
    parts = {}
    for s in SPLITS:
        parts[s] = rows[split == s].reset_index(drop=True)
        if parts[s].empty:
            raise ValueError(f"{path}: the {s} split is empty; add {s} rows to the split column (or drop it)")
    return PairTask(path.name, parts["train"], parts["val"], parts["test"])


def parse_locales(text: str) -> list[str]:
    """Locale codes from comma-separated text, as --locales and 05's `locales` take them: "en, fr,de" ->
    ["en", "fr", "de"]."""
    return [code.strip() for code in str(text).split(",") if code.strip()]


def check_locales(locales: Sequence[str]) -> None:
    """Refuse an empty list or a code babel does not know (CLDR codes such as "en", "pt_BR"), in one line."""
    from babel import Locale, UnknownLocaleError

    if not locales:
        raise ValueError(f"no locales given; pass some of {', '.join(DATE_LOCALES)}")
    for loc in locales:
        try:
            Locale.parse(loc)
        except (ValueError, UnknownLocaleError):
            raise ValueError(f"locale {loc!r} is unknown to babel; use a CLDR code such as {', '.join(DATE_LOCALES)}") from None


def load_pairs(spec: str | Path = "dates", source_col: str = "source", target_col: str = "target",
               seed: int = 0, **date_options: Any) -> PairTask:
    """A translation task: "dates" (`date_task`, with `date_options`) or a file (`file_task`)."""
    if str(spec) == "dates":
        task = date_task(seed=seed, **date_options)
        task.source = {"spec": "dates", "seed": seed, **{k: list(v) if isinstance(v, (list, tuple)) else v
                                                         for k, v in date_options.items()}}
    else:
        if date_options:
            raise ValueError(f"{', '.join(date_options)} choose the built-in date task's pairs; a file of pairs "
                             f"({spec}) takes none of them: drop them")
        task = file_task(spec, source_col, target_col, seed)
        task.source = {"spec": str(Path(spec).resolve()), "source_col": source_col, "target_col": target_col, "seed": seed}
    return task


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------


class PairTokenizer:
    """Text <-> ids for both sides of a translation model: a workbench `Tokenizer` shifted past the
    four specials <pad>=0, <bos>=1, <eos>=2, <unk>=3.

    Character level (the default) maps a character the training pairs never showed to <unk> rather
    than failing, so a user can type anything; byte-level BPE never needs <unk>. One vocabulary
    serves source and target (shared embeddings are possible; the model may still keep two tables).

    Args:
        base: a `CharTokenizer` or `BPETokenizer` trained on the training pairs.
    """

    def __init__(self, base: Tokenizer):
        self.base = base
        self.kind = base.kind
        self._stoi = {c: i + len(SPECIALS) for i, c in enumerate(base.chars)} if isinstance(base, CharTokenizer) else None

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(SPECIALS)

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, without specials (char: unknown characters become <unk>)."""
        if self._stoi is not None:
            return [self._stoi.get(c, UNK_ID) for c in text]
        return [i + len(SPECIALS) for i in self.base.encode(text)]

    def unknown(self, text: str) -> list[str]:
        """The characters of `text` that would become <unk> (always none for BPE)."""
        return sorted({c for c in text if c not in self._stoi}) if self._stoi is not None else []

    def decode(self, ids: Any) -> str:
        """Text of `ids`, up to the first <eos>; <pad>/<bos> dropped, <unk> written "�"."""
        out: list[int] = []
        text = ""
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if i == EOS_ID:
                break
            if i == UNK_ID:
                text, out = text + self.base.decode(out) + "\ufffd", []
            elif i >= len(SPECIALS):
                out.append(i - len(SPECIALS))
        return text + self.base.decode(out)

    def tokens(self, ids: Any) -> list[str]:
        """Display strings, one per id (specials by name), for plot axes."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return [SPECIALS[i] if i < len(SPECIALS) else self.base.tokens([i - len(SPECIALS)])[0] for i in ids]

    def to_dict(self) -> dict:
        return {"kind": "pair", "specials": list(SPECIALS), "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "PairTokenizer":
        if not isinstance(d, dict) or d.get("kind") != "pair":
            raise ValueError("not a saved translation tokenizer (kind 'pair'); point at a seq2seq-train run")
        return cls(tokenizer_from_dict(d["base"]))

    def __repr__(self) -> str:
        return f"PairTokenizer({self.kind}, vocab_size={self.vocab_size})"


def train_pair_tokenizer(task: PairTask, kind: str = "char", vocab_size: int = 1024) -> PairTokenizer:
    """One vocabulary for sources and targets, from the TRAINING pairs only.

    Args:
        kind: "char" (every character of the training pairs, CJK included) or "bpe" (byte-level,
            `vocab_size` ids before the four specials).
    """
    texts = list(task.train["source"]) + list(task.train["target"])
    if kind == "char":
        return PairTokenizer(CharTokenizer.train(texts))
    if kind == "bpe":
        return PairTokenizer(BPETokenizer.train(texts, vocab_size))
    raise ValueError(f"tokenizer {kind!r} is not char or bpe; pick one of those")


def encode_pairs(tokenizer: PairTokenizer, pairs: pd.DataFrame, max_src_len: int | None = None,
                 max_tgt_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources and <bos> target <eos> as right-padded id tensors.

    A source longer than max_src_len keeps its start; a target longer than max_tgt_len (counting
    <bos> and <eos>) keeps its start and its <eos>. The decoder reads ``tgt[:, :-1]`` and learns to
    predict ``tgt[:, 1:]``.

    Args:
        pairs: DataFrame with source and target columns (N rows).
    Returns:
        (src (N, S) int64, tgt (N, T) int64), <pad> = 0 after the end of each row.
    """
    src = [tokenizer.encode(s)[:max_src_len] for s in pairs["source"]]
    tgt = [[BOS_ID, *tokenizer.encode(t), EOS_ID] for t in pairs["target"]]
    if max_tgt_len is not None:
        tgt = [t if len(t) <= max_tgt_len else t[: max_tgt_len - 1] + [EOS_ID] for t in tgt]
    return pad_ids(src), pad_ids(tgt)


def pad_ids(seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Right-pad lists of ids with <pad> into an (N, longest) int64 tensor."""
    out = torch.full((len(seqs), max((len(s) for s in seqs), default=0)), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out
