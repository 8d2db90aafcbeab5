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
