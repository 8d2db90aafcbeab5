"""Small helpers several test modules share."""

import contextlib
import io
import random
import subprocess
from pathlib import Path

import torch

from workbench.__main__ import main
from workbench.config import ModelConfig
from workbench.model import GPT


def cli(*argv) -> tuple[int, str, str]:
    """Run `python -m workbench ARGV` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own errors and --help
            code = e.code
    return code, out.getvalue(), err.getvalue()


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """End a started server or browser: terminate, and kill it if it has not gone within `timeout` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


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


# A short held-out-like text for LM and generation tests: two speeches, one non-ASCII character.
TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\nDeny thy father and refuse thy name; café.\n")


def tiny_gpt(vocab_size: int, block_size: int = 16, n_embd: int = 16, n_layer: int = 1, seed: int = 0) -> GPT:
    """A freshly initialised (seeded) GPT in eval mode."""
    torch.manual_seed(seed)
    return GPT(ModelConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=2,
                           n_embd=n_embd)).eval()


class CountLinear(torch.overrides.TorchFunctionMode):
    """Counts `F.linear` calls while active (a module's forward and a bare call alike)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += func is torch.nn.functional.linear
        return func(*args, **(kwargs or {}))


class FakeClock:
    """Stands in for time.perf_counter: time passes only when the test says so (`now +=`), or by
    `tick` seconds at every reading."""

    def __init__(self, tick: float = 0.0):
        self.now, self.tick = 1000.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now
