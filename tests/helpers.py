"""Small helpers several test modules share."""

import contextlib
import io
import random
from pathlib import Path

from workbench.__main__ import main


def cli(*argv) -> tuple[int, str, str]:
    """Run `python -m workbench ARGV` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own errors and --help
            code = e.code
    return code, out.getvalue(), err.getvalue()


def word_corpus(path: Path, words: str, lines: int, words_per_line: int) -> Path:
    """Write `lines` lines of words drawn (seed 0) from `words`; a tiny corpus for training runs."""
    rng = random.Random(0)
    vocab = words.split()
    path.write_text("\n".join(" ".join(rng.choice(vocab) for _ in range(words_per_line)) for _ in range(lines)))
    return path


# A tiny 3-class text task: each class shows in a few cue words among filler.
LABELS = ("comedy", "history", "tragedy")
CUES = {"comedy": ("jest", "wed", "fool", "merry"), "history": ("crown", "england", "france", "war"),
        "tragedy": ("death", "blood", "grave", "ghost")}
FILLER = "the a my lord and of to thy good sir".split()


def tiny_rows(n_per_class: int, seed: int = 0) -> list[dict]:
    """Short texts whose class shows in a few cue words among filler."""
    rng = random.Random(seed)
    rows = []
    for label in LABELS:
        for _ in range(n_per_class):
            words = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))] + [rng.choice(CUES[label]) for _ in range(2)]
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": label})
    return rows
