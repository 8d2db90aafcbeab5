"""Fixtures several test modules share (plain helpers are in helpers.py)."""

import pandas as pd
import pytest
import torch
from helpers import TEXT, tiny_rows

from workbench.tasks import load_task
from workbench.tokenizer import CharTokenizer, train_tokenizer


@pytest.fixture(scope="module")
def csv_task(tmp_path_factory):
    """A 3-class CSV (30 rows per class) and the task loaded from it (80/10/10 split)."""
    path = tmp_path_factory.mktemp("task") / "tiny.csv"
    pd.DataFrame(tiny_rows(30)).to_csv(path, index=False)
    return path, load_task(path)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine two threads
    contending with other processes run many times slower: keep a module fast and steady."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def char_tok():
    """A character tokenizer of helpers.TEXT."""
    return CharTokenizer.train(TEXT)


@pytest.fixture(scope="module")
def bpe_tok():
    """A byte-level BPE tokenizer trained on helpers.TEXT (too small for all 400 tokens)."""
    with pytest.warns(UserWarning, match="learned only"):
        return train_tokenizer("bpe", TEXT * 3, vocab_size=400)
