"""Classification tasks: labelled passages in disjoint train/val/test splits, for fine-tuning.

    task = load_task("genre")               # speeches -> First Folio genre, the same held-out plays
    task = load_task("reviews.csv", text_col="review", label_col="stars")   # a user table
    task.train, task.val, task.test         # DataFrames: text, label, label_id (+ play, speaker)
    task.balance()                          # class counts per split
    task.plays_by_split()                   # the plays of each split and label (genre task)

The genre task's splits are the language model's whole held-out plays (``workbench.data``'s
``VAL_PLAYS`` and ``TEST_PLAYS``), so a model pretrained on the train split never saw a
validation or test passage. A user's CSV/TSV/JSONL is split 80/10/10 by class unless it has a
``split`` column.

`encode_task` turns a task's passages into padded token ids for a model (kept for the next run
on the same task), and `reading_coverage` says how much of each passage a model of a given
window actually reads.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .data import (FOLIO_GENRE, SPLITS, TABLE_FILES, Document, SplitFrames, load_shakespeare, read_table, require_columns,
                   split_documents)
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

TASK_COLUMNS = ("text", "label", "label_id")
GENRE_MIN_CHARS = 200  # a speech shorter than this says too little to tell its play's genre
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train/val/test of a user table without a `split` column


@dataclass
class TaskData(SplitFrames):
    """A text classification task: labelled passages in disjoint train/val/test splits.

    Attributes:
        name: "genre" or the file's name.
        labels: class names, sorted; ``label_id`` indexes this list (saved with a fine-tuned model).
        train, val, test: DataFrames with columns ``text`` (str), ``label`` (str) and ``label_id``
            (int), plus ``play`` and ``speaker`` for the genre task.
        source: the arguments of `load_task` that load it again (None for a task built otherwise);
            a fine-tuning run keeps them, so a bare ``finetune --resume`` reloads the same task.
    """

    name: str
    labels: list[str]
    train: pd.DataFrame = field(repr=False)
    val: pd.DataFrame = field(repr=False)
    test: pd.DataFrame = field(repr=False)
    source: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"TaskData({self.name!r}, labels={self.labels}, {self.sizes()})"

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def balance(self, normalize: bool = False) -> pd.DataFrame:
        """Class balance: one row per label, one column per split plus "total".

        Args:
            normalize: fractions of each column instead of counts.
        Returns:
            DataFrame indexed by label (in ``labels`` order) with columns train, val, test, total.
        """
        counts = self.counts("label").reindex(self.labels).fillna(0).astype(int)
        counts["total"] = counts[list(SPLITS)].sum(axis=1)
        counts.index.name = "label"
        return counts / counts.sum() if normalize else counts

    def examples(self, per_label: int = 1, split: str = "train") -> pd.DataFrame:
        """The first `per_label` passages of each label in `split`: label, the play (genre task) and text."""
        df = self.split(split)
        return df.groupby("label", sort=True).head(per_label)[[c for c in ("label", "play", "text") if c in df]]

    def plays_by_split(self) -> pd.DataFrame:
        """Which plays (documents) each split holds for each label, to check that no play is in two splits.

        Returns:
            DataFrame indexed by (split, label), splits in train/val/test order, with one column
            "plays": the play names of that split and label, comma-separated, in order of appearance.
        Raises:
            ValueError: the task has no ``play`` column (a user table, split by rows, not by documents).
        """
        if any("play" not in self.split(s).columns for s in SPLITS):
            raise ValueError(f"task {self.name!r} has no 'play' column: only the genre task is split by whole plays; "
                             "check a user table's split with balance()")
        rows = [(s, label, ", ".join(df["play"].unique()))
                for s in SPLITS for label, df in self.split(s).groupby("label", sort=True)]
        return pd.DataFrame(rows, columns=["split", "label", "plays"]).set_index(["split", "label"])

    def subsample(self, per_label: int | None, seed: int = 0) -> "TaskData":
        """At most `per_label` random rows of each label in each split (None: everything), for quick runs."""
        if per_label is None:
            return self
        if isinstance(per_label, bool) or not (isinstance(per_label, numbers.Integral) and per_label >= 1):
            raise ValueError(f"per_label must be an integer >= 1 (None keeps every row), got {per_label!r}")

        def pick(df: pd.DataFrame) -> pd.DataFrame:
            rows = [i for _, g in df.groupby("label") for i in g.sample(min(len(g), per_label), random_state=seed).index]
            return df.loc[sorted(rows)]

        return TaskData(self.name, self.labels, pick(self.train), pick(self.val), pick(self.test))


def cut_passage(text: str, max_chars: int | None) -> str:
    """The start of `text`, at most `max_chars` characters, cut at the last whitespace so no
    word is split (a single word longer than `max_chars` is cut mid-word). None keeps all."""
    if max_chars is None or len(text) <= max_chars:
        return text
    head = text[: max_chars + 1]  # one more: a cut right before whitespace keeps the last word
    cut = max(head.rfind(" "), head.rfind("\n"))
    return (text[:cut] if cut > 0 else text[:max_chars]).rstrip()


def _check_max_chars(max_chars: int | None) -> int | None:
    """`max_chars` as `cut_passage` takes it: 0 means no limit, as the CLI's ``--max-chars 0`` does
    (a negative one would silently cut the end off every passage)."""
    if max_chars is not None and max_chars < 0:
        raise ValueError(f"max_chars (--max-chars) is {max_chars}; pass a positive number of characters, "
                         "or 0 (None) to keep passages whole")
    return max_chars or None


def play_speeches(doc: Document) -> list[tuple[str, str]]:
    """The speeches of a parsed play as (speaker, spoken text), the ``NAME:`` line removed.

    Paragraphs with no speaker (a few lines after a heading, see ``parse_play_markdown``) are left
    out: some are stage-direction fragments, and a passage should be one character's speech.
    """
    out = []
    for para in doc.text.split("\n\n"):
        first, _, rest = para.strip("\n").partition("\n")
        if first.endswith(":") and rest:
            out.append((first[:-1], rest))
    return out


def _task_frame(rows: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    df = rows.reset_index(drop=True)
    df["label_id"] = df["label"].map({name: i for i, name in enumerate(labels)}).astype(int)
    return df[[*TASK_COLUMNS, *[c for c in df.columns if c not in TASK_COLUMNS]]]


def genre_task(min_chars: int = GENRE_MIN_CHARS, max_chars: int | None = 600) -> TaskData:
    """The built-in task: which First Folio genre (comedy, history, tragedy) is a speech's play?

    Passages are speeches (speaker turns) of the parsed plays with at least `min_chars` characters
    of spoken text; the speaker's ``NAME:`` line is removed so a name cannot give the play away
    (names *inside* the lines stay: they are what the characters say). With the defaults there are
    6,154 speeches (the parse keeps a speech that resumes after a stage direction whole).
    A speech longer than `max_chars` keeps only its start (``cut_passage``); the tokenizer's block
    size truncates further at fine-tuning time. Splits are whole plays, exactly the plays of
    ``split_documents`` (``VAL_PLAYS``, ``TEST_PLAYS``), so no play is in two splits and the
    language model pretrained on the train split never saw a validation or test play.

    Args:
        min_chars: shortest speech kept (characters of spoken text, before cutting).
        max_chars: longest passage; None (or 0) keeps whole speeches.
    Returns:
        TaskData "genre" with labels ["comedy", "history", "tragedy"] and columns
        text, label, label_id, play (slug), speaker.
    """
    max_chars = _check_max_chars(max_chars)
    if max_chars is not None and max_chars < min_chars:
        raise ValueError(f"max_chars (--max-chars) {max_chars} is below min_chars={min_chars}, the shortest speech "
                         "kept; raise it, or pass --max-chars 0 (None) to keep whole speeches")
    labels = sorted(set(FOLIO_GENRE.values()))
    parts = {}
    for split, docs in split_documents(load_shakespeare()).items():
        rows = [{"text": cut_passage(text, max_chars), "label": d.genre, "play": d.slug, "speaker": speaker}
                for d in docs for speaker, text in play_speeches(d) if len(text) >= min_chars]
        parts[split] = _task_frame(pd.DataFrame(rows), labels)
    return TaskData("genre", labels, parts["train"], parts["val"], parts["test"])


def stratified_split(labels: pd.Series, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
                     ) -> pd.Series:
    """Assign each row to train/val/test, class by class, deterministically from `seed`.

    Within each class (in sorted order) the rows are shuffled by ``np.random.default_rng(seed)``;
    round(n * val fraction) go to val, as many to test (for the default 80/10/10), the rest to train,
    so every split keeps the class balance as closely as whole rows allow.

    Returns:
        a Series of "train" | "val" | "test" aligned with `labels`.
    """
    rng = np.random.default_rng(seed)
    out = pd.Series("train", index=labels.index, dtype=object)
    for name in sorted(labels.unique()):
        idx = labels.index[labels == name].to_numpy()
        idx = idx[rng.permutation(len(idx))]
        n_val, n_test = round(len(idx) * fractions[1]), round(len(idx) * fractions[2])
        out[idx[:n_val]] = "val"
        out[idx[n_val : n_val + n_test]] = "test"
    return out


def table_task(path: str | Path, text_col: str = "text", label_col: str = "label", seed: int = 0,
               max_chars: int | None = None) -> TaskData:
    """A classification task from a user's CSV or JSONL file.

    Rows need a text column and a label column (labels are read as strings). If a ``split``
    column exists, its values (train/val/test) place the rows; otherwise ``stratified_split``
    makes a deterministic 80/10/10 split by class with `seed`. Label ids index the sorted label
    names. Every problem raises one ValueError naming the fix: no rows, missing columns (the
    available ones are listed), empty texts or labels, a single class, a bad or empty split, and
    labels in val/test that train never shows. A class with no val or test rows is only warned
    about (it can still be learned, but macro-F1 on that split counts it as 0).

    Args:
        path: a .csv or .jsonl file.
        text_col, label_col: column names.
        seed: for the stratified split.
        max_chars: cut longer texts to their start (``cut_passage``); None (or 0) keeps them whole.
    Returns:
        TaskData named after the file.
    """
    max_chars = _check_max_chars(max_chars)
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"task file {path} is a folder; pass --task genre or a .csv/.tsv/.jsonl file")
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist; pass --task genre or a .csv/.tsv/.jsonl file")
    if path.suffix.lower() not in TABLE_FILES:
        raise ValueError(f"task file {path} is not .csv, .tsv or .jsonl; save it as one of those")
    df = read_table(path)
    if df.empty:  # a header-only CSV or an empty JSONL: nothing to split or learn
        raise ValueError(f"{path} has no rows; add rows with a text and a label each")
    require_columns(df, (text_col, label_col), "pass --text-col / --label-col naming the right ones", name=str(path))
    rows = pd.DataFrame({"text": df[text_col].fillna("").astype(str),
                         "label": df[label_col].fillna("").astype(str).str.strip()})
    for col, what in (("text", "text"), ("label", "label")):
        empty = rows.index[rows[col].str.strip() == ""]
        if len(empty):
            raise ValueError(f"{path}: {len(empty)} row(s) have an empty {what} (first: row {empty[0]}); "
                             f"fill or remove them")
    labels = sorted(rows["label"].unique())
    if len(labels) < 2:
        raise ValueError(f"{path}: every row has the label {labels[0]!r}; a classifier needs at least two classes")
    if "split" in df.columns:
        rows["split"] = df["split"].astype(str).str.strip().str.lower()
        bad = sorted(set(rows["split"]) - set(SPLITS))
        if bad:
            raise ValueError(f"{path}: split column has value(s) {', '.join(map(repr, bad[:5]))}; "
                             "use only train, val and test (or drop the column for an 80/10/10 split)")
    else:
        rows["split"] = stratified_split(rows["label"], seed)
    for s in SPLITS:
        if not (rows["split"] == s).any():
            if "split" not in df.columns and len(labels) == len(rows) >= 10:  # a score or an id, not a class
                raise ValueError(f"{path}: the {s} split is empty: the {label_col!r} column has {len(labels)} different "
                                 f"values in {len(rows)} rows; pass --label-col naming a column of classes")
            raise ValueError(f"{path}: the {s} split is empty; add rows (each class needs 6+ for an "
                             "80/10/10 split) or a split column with train, val and test rows")
    unseen = sorted(set(rows.loc[rows["split"] != "train", "label"]) - set(rows.loc[rows["split"] == "train", "label"]))
    if unseen:
        raise ValueError(f"{path}: label(s) {', '.join(map(repr, unseen[:5]))} appear in val/test but never in "
                         "train; move some of those rows to train")
    # A class too small for the split (1-5 rows: round(n * 0.1) is 0, round(0.5) too) lands only in
    # train. That is legal, so only warn: the model still learns it, but a split's macro-F1 scores it 0.
    held_out = {s: set(rows.loc[rows["split"] == s, "label"]) for s in ("val", "test")}
    absent = [name for name in labels if name not in held_out["val"] or name not in held_out["test"]]
    if absent:
        fix = ("add val and test rows for them" if "split" in df.columns
               else "add rows for them (6+ each for an 80/10/10 split)")
        log.warning("%s: class(es) %s have no val or test rows, so that split's macro-F1 scores each as 0; %s "
                    "or remove them", path, ", ".join(map(repr, absent[:5])), fix)
    rows["text"] = [cut_passage(t, max_chars) for t in rows["text"]]
    parts = {s: _task_frame(rows[rows["split"] == s].drop(columns="split"), labels) for s in SPLITS}
    return TaskData(path.name, labels, parts["train"], parts["val"], parts["test"])


def load_task(spec: str | Path = "genre", text_col: str = "text", label_col: str = "label", seed: int = 0,
              max_chars: int | None = 600) -> TaskData:
    """A classification task: "genre" (``genre_task``) or a CSV/TSV/JSONL path (``table_task``).

    Args:
        spec: "genre" or a path.
        text_col, label_col: columns of a user table.
        seed: the 80/10/10 split of a table without a split column.
        max_chars: passages longer than this keep their start; None (or 0) keeps them whole.
    Returns:
        TaskData.
    """
    max_chars = _check_max_chars(max_chars)  # 0 keeps passages whole, as None
    task = genre_task(max_chars=max_chars) if str(spec) == "genre" else table_task(spec, text_col, label_col, seed, max_chars)
    spec = "genre" if str(spec) == "genre" else str(Path(spec).resolve())  # a resume may run from another folder
    task.source = {"spec": spec, "text_col": text_col, "label_col": label_col, "seed": seed, "max_chars": max_chars}
    return task


# ---------------------------------------------------------------------------------------------
# Tokenized passages
# ---------------------------------------------------------------------------------------------


def encode_texts(tokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize, keep the first `max_len` tokens, right-pad with id 0.

    Args:
        tokenizer: a workbench `Tokenizer`, or a Hugging Face fast tokenizer (its [CLS] ... [SEP]
            framing is kept: a long text keeps its first max_len-1 tokens and its [SEP]).
        texts: N strings.
        max_len: longest sequence.
    Returns:
        (idx (N, T) int64 with T = the longest encoded text, lengths (N,) int64).
    """
    if isinstance(tokenizer, Tokenizer):
        seqs = [tokenizer.encode(t)[:max_len] for t in texts]
        pad = 0
    else:  # Hugging Face: the backend encodes without touching the shared tokenizer's padding settings
        seqs = [e.ids if len(e.ids) <= max_len else e.ids[: max_len - 1] + e.ids[-1:]
                for e in tokenizer.backend_tokenizer.encode_batch(list(texts))]
        pad = tokenizer.pad_token_id or 0
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    if len(seqs) and int(lengths.min()) == 0:
        raise ValueError(f"text {int(lengths.argmin())} encodes to no tokens; remove empty texts")
    idx = torch.full((len(seqs), int(lengths.max()) if len(seqs) else 0), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return idx, lengths


def trim_padding(idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Drop the columns that are padding in every row (a causal model's output is unchanged)."""
    return idx[:, : int(lengths.max())]


_ENCODED: dict[tuple, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}  # the last few tasks' encodings


def encode_task(tokenizer, task: TaskData, max_len: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`encode_texts` of the train, val and test texts, remembered for the next run on the same
    task, tokenizer and max_len (a comparison grid encodes each task once; treat the tensors as read-only)."""
    vocab = tokenizer.to_dict() if isinstance(tokenizer, Tokenizer) else tokenizer.backend_tokenizer.to_str()
    key = (str(vocab), max_len, *(tuple(task.split(s)["text"]) for s in ("train", "val", "test")))
    if key not in _ENCODED:
        if getattr(tokenizer, "kind", None) == "char":  # name the task, not "a corpus edited since?"
            for split in ("train", "val", "test"):
                unseen = sorted(set().union(*map(set, task.split(split)["text"])) - set(tokenizer.chars))
                if unseen:
                    raise ValueError(f"{task.name}: its {split} texts have characters the base model's char "
                                     f"tokenizer never saw ({', '.join(map(repr, unseen[:10]))}); remove them from "
                                     "the task's texts, or pretrain the base model with --tokenizer bpe")
        while len(_ENCODED) >= 2:
            _ENCODED.pop(next(iter(_ENCODED)))
        _ENCODED[key] = {s: encode_texts(tokenizer, task.split(s)["text"].tolist(), max_len) for s in ("train", "val", "test")}
    return _ENCODED[key]


def reading_coverage(tokenizer, task: TaskData, max_len: int) -> pd.DataFrame:
    """How much of each passage a model that reads `max_len` tokens actually sees, per split.

    TF-IDF reads every character of a passage; a GPT reads its first `max_len` tokens. A fair
    comparison gives both the same text, so check that `read_whole_pct` is close to 100.

    Returns:
        DataFrame indexed by split: passages, median_chars, median_tokens, read_whole_pct
        (passages with at most max_len tokens), chars_read_pct (characters inside the window).
    """
    rows = {}
    for split in ("train", "val", "test"):
        texts = task.split(split)["text"].tolist()
        tokens = [tokenizer.encode(t) for t in texts]
        n_tok = np.array([len(t) for t in tokens])
        n_chr = np.array([len(t) for t in texts])
        read = np.array([len(tokenizer.decode(t[:max_len])) for t in tokens])
        rows[split] = {"passages": len(texts), "median_chars": float(np.median(n_chr)),
                       "median_tokens": float(np.median(n_tok)),
                       "read_whole_pct": 100.0 * float(np.mean(n_tok <= max_len)),
                       "chars_read_pct": 100.0 * float(read.sum() / n_chr.sum())}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("split")
