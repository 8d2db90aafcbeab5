"""Small helpers several test modules share."""

import contextlib
import io
import random
import subprocess
from pathlib import Path

import pandas as pd
import torch

from workbench import checkpoint as ckpt
from workbench import run as run_module
from workbench import train as train_module
from workbench.__main__ import main
from workbench.config import ModelConfig, RunConfig
from workbench.model import GPT
from workbench.tokenizer import train_tokenizer


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


def save_base(path: Path, task, **shape) -> Path:
    """A GPT of 1 layer, 2 heads, 32 wide, block 32 (| shape) with random weights (seed 0) and a char
    tokenizer of the task's texts, saved the way pretrain saves its model: a base for finetune."""
    text = "\n".join(pd.concat([task.train, task.val, task.test])["text"])
    tok = train_tokenizer("char", text)
    shape = {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32} | shape
    config = RunConfig(model=ModelConfig(vocab_size=tok.vocab_size, **shape))
    torch.manual_seed(0)
    ckpt.save_checkpoint(path, GPT(config.model), {"config": config.to_dict(), "tokenizer": tok.to_dict()})
    return path


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


def fake_cuda_graphs(monkeypatch) -> list:
    """Let `train.StepGraph` run on a CPU, for its bookkeeping (warm-up, learning rates, input copies,
    re-recording after a resume) and for the callers that feed it: streams do nothing, and a "graph"
    runs the step it captured — the capture runs the captured step once for real, as capture followed
    by its first replay does on a GPU, and each later replay runs `Trainer._step` on the captured
    inputs into the captured outputs, its gradients written afresh as a replayed backward writes
    them. Returns the graphs made, each with its `step_graph`. The real capture is tests/test_cuda.py's."""
    graphs = []

    class Stream:
        def __init__(self, *args):
            pass

        def wait_stream(self, other):
            pass

    class Graph:
        def __init__(self):
            self.step_graph, self.captured = None, False
            graphs.append(self)

        def replay(self):
            if not self.captured:  # the capture ran this step
                self.captured = True
                return
            sg = self.step_graph
            sg.trainer.optimizer.zero_grad(set_to_none=True)
            for into, value in zip(sg.outputs, sg.trainer._step(sg.inputs)):
                if into is not None:
                    into.copy_(value)

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *args: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: contextlib.nullcontext())
    for module in (train_module, run_module):  # the Trainer's check and `run.setup_device`'s early one
        monkeypatch.setattr(module, "graph_problem", lambda device, dist: None)

    original = train_module.StepGraph.__call__

    def call(sg, batches, lr):  # tell the graph which StepGraph it belongs to
        if graphs and graphs[-1].step_graph is None:
            graphs[-1].step_graph = sg
        return original(sg, batches, lr)
    monkeypatch.setattr(train_module.StepGraph, "__call__", call)
    return graphs


def batch_widths(monkeypatch) -> set:
    """The set of batch shapes (each tensor's width: shape[1]) that `Trainer._step` is given from now
    on, filled as training runs; `clear()` it between runs."""
    widths, step = set(), train_module.Trainer._step

    def seen_step(trainer, batches):
        widths.update(tuple(x.shape[1] for x in batch if x.dim() > 1) for batch in batches)
        return step(trainer, batches)
    monkeypatch.setattr(train_module.Trainer, "_step", seen_step)
    return widths


# hand-made attention patterns (T, T), rows summing to 1
def causal_uniform(T):
    """Each query spreads its weight evenly over itself and the keys before it."""
    return torch.ones(T, T).tril() / torch.arange(1, T + 1)[:, None]


def prev_token_head(T):
    """Each query looks at the token before it (the first at itself)."""
    a = torch.zeros(T, T)
    a[0, 0] = 1
    a[torch.arange(1, T), torch.arange(T - 1)] = 1
    return a
