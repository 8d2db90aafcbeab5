"""The evaluation card, checked against references: F.cross_entropy on a direct forward for
perplexity, a uniform "model" whose bits per token/character are known exactly, every token scored
once by the sliding windows, the one held-out LM loss. The CLI writes metrics.json for a tiny trained
run. Classification metrics: test_metrics.py; compression: test_compress.py; generation quality:
test_generation_eval.py."""

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import TEXT, cli, tiny_gpt

from workbench import evaluate as ev
from workbench import metrics as mt
from workbench import viz
from workbench.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.data import Corpus, Document
from workbench.generation_eval import DEFAULT_STRATEGIES
from workbench.model import GPT
from workbench.checkpoint import DamagedCheckpointError
from workbench.pretrain import load_pretrained, pretrain, run_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


class Uniform(nn.Module):
    """A "model" whose next-token distribution is exactly uniform: every token costs log(V) nats."""

    def __init__(self, vocab_size: int, block_size: int = 8):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size, block_size=block_size)

    def forward(self, idx, targets=None):
        return torch.zeros(*idx.shape, self.config.vocab_size), None


# ------------------------------------------------------------------------- language modelling
def test_short_text_perplexity_is_exp_of_mean_cross_entropy_of_one_forward(char_tok):
    model = tiny_gpt(char_tok.vocab_size, block_size=64)
    text = TEXT[:40]
    ids = torch.tensor(char_tok.encode(text))
    logits, _ = model(ids[None, :-1])
    ce = F.cross_entropy(logits[0], ids[1:]).item()  # mean over the 39 tokens after the first
    m = ev.lm_metrics(model, char_tok, text)
    assert m["tokens"] == 39 and m["characters"] == 39 and m["bytes"] == 39
    assert m["cross_entropy"] == pytest.approx(ce, rel=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(ce), rel=1e-6)
    assert m["bits_per_token"] == pytest.approx(ce / math.log(2), rel=1e-6)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_uniform_model_gives_log2_v_bits_per_token_and_per_character(kind, char_tok, bpe_tok):
    tok = char_tok if kind == "char" else bpe_tok
    V = tok.vocab_size
    ids = tok.encode(TEXT)
    first = tok.decode(ids[:1])
    m = ev.lm_metrics(Uniform(V), tok, TEXT)
    n_tokens, n_chars = len(ids) - 1, len(TEXT) - len(first)
    n_bytes = len(TEXT.encode()) - len(first.encode())
    assert (m["tokens"], m["characters"], m["bytes"]) == (n_tokens, n_chars, n_bytes)
    assert m["bits_per_token"] == pytest.approx(math.log2(V))
    assert m["perplexity"] == pytest.approx(V)
    assert m["bits_per_char"] == pytest.approx(n_tokens * math.log2(V) / n_chars)
    assert m["bits_per_byte"] == pytest.approx(n_tokens * math.log2(V) / n_bytes)
    assert n_bytes > n_chars  # "é" is two bytes, so the two denominators differ


def test_bpe_and_char_differ_in_perplexity_but_bits_per_char_counts_the_same_text(char_tok, bpe_tok):
    c = ev.lm_metrics(Uniform(char_tok.vocab_size), char_tok, TEXT)
    b = ev.lm_metrics(Uniform(bpe_tok.vocab_size), bpe_tok, TEXT)
    assert b["tokens"] < c["tokens"] and b["perplexity"] > c["perplexity"]
    # both are per character of (almost) the same text: only the first token's characters differ
    assert abs(b["characters"] - c["characters"]) <= len(bpe_tok.decode(bpe_tok.encode(TEXT)[:1]))


@torch.no_grad()
def chunked_token_losses(model, ids: torch.Tensor, T: int) -> np.ndarray:
    """Independent reference for the held-out loss: non-overlapping chunks of T inputs (the last
    one shorter), -log softmax of one direct forward per chunk; (len(ids) - 1,) nats."""
    out = []
    for b in range(0, len(ids) - 1, T):
        y = ids[b + 1 : b + T + 1]
        logits, _ = model(ids[b : b + len(y)][None])
        out.append(-logits[0].log_softmax(-1).gather(1, y[:, None])[:, 0])
    return torch.cat(out).double().numpy()


def test_default_windows_are_non_overlapping_chunks_with_the_shorter_last_one_scored(char_tok):
    T = 16
    model = tiny_gpt(char_tok.vocab_size, block_size=T)
    ids = torch.tensor(char_tok.encode(TEXT))
    assert len(ids) > 5 * T and (len(ids) - 1) % T != 0  # a shorter last window
    ref = chunked_token_losses(model, ids, T)
    np.testing.assert_allclose(ev.token_losses(model, ids, batch_size=3), ref, rtol=1e-5)
    m = ev.lm_metrics(model, char_tok, TEXT, batch_size=3)
    assert m["stride"] == T and m["tokens"] == len(ids) - 1
    assert m["cross_entropy"] == pytest.approx(ref.mean(), rel=1e-6)
    assert m["cross_entropy"] == pytest.approx(ev.heldout_loss(model, ids), rel=1e-6)
    # total bits = bits per char x chars = sum of per-token cross-entropy in bits
    assert m["bits_per_char"] * m["characters"] == pytest.approx(ref.sum() / math.log(2), rel=1e-6)


# 202 targets: 25 windows of 8 and a last one of 2
SPLIT = np.random.default_rng(0).integers(0, 40, size=203).astype(np.uint16)


def test_lm_evaluator_on_the_whole_split_is_every_token_once_by_hand():
    T = 8
    model = tiny_gpt(40, block_size=T)
    ref = chunked_token_losses(model, torch.from_numpy(SPLIT.astype(np.int64)), T)
    assert len(ref) == len(SPLIT) - 1
    whole = ev.lm_evaluator(SPLIT, T, batch_size=4, eval_iters=None, device="cpu", prefix="test")(model)
    assert whole == {"test_loss": pytest.approx(ref.mean(), rel=1e-6)}
    whole = whole["test_loss"]
    assert ev.heldout_loss(model, SPLIT, batch_size=4) == whole
    for eval_iters in (7, 100):  # 28 or more windows of the 26: the whole split, exactly
        assert ev.lm_evaluator(SPLIT, T, 4, eval_iters, "cpu")(model)["val_loss"] == whole


def test_cpu_evaluation_batches_by_activations_caps_the_logits_and_scores_the_same(monkeypatch):
    T = 8
    model = tiny_gpt(40, block_size=T)
    whole = ev.heldout_loss(model, SPLIT, batch_size=16)
    rows = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda idx, *a: (rows.append(idx.size(0)), forward(idx, *a))[1])
    monkeypatch.setattr(ev, "EVAL_LOGITS", 3 * T * 40)  # three windows' logits
    assert ev.heldout_loss(model, SPLIT, batch_size=16) == pytest.approx(whole, rel=1e-6)
    assert rows == [3] * 8 + [1, 1]  # 25 windows of 8 three at a time, then the last one of 2 alone
    rows.clear()
    monkeypatch.setattr(ev, "EVAL_LOGITS", 2**22)
    assert ev.heldout_loss(model, SPLIT, batch_size=16) == pytest.approx(whole, rel=1e-6)
    assert rows == [25, 1]  # a tiny model's pass is mostly fixed cost: EVAL_ACTIVATIONS asks for every window
    rows.clear()
    monkeypatch.setattr(ev, "EVAL_ACTIVATIONS", 0)
    ev.heldout_loss(model, SPLIT, batch_size=16)
    assert rows == [16, 9, 1]  # under both, batch_size decides


def test_sampled_evaluation_is_a_seeded_estimate_that_leaves_the_torch_rng_alone():
    T = 8
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=40, block_size=T, n_layer=1, n_head=2, n_embd=16, dropout=0.5)).train()
    evaluate = ev.lm_evaluator(SPLIT, T, batch_size=4, eval_iters=2, device="cpu", seed=3)  # 8 of 26 windows
    state = torch.get_rng_state()
    first = evaluate(model)["val_loss"]
    assert torch.equal(torch.get_rng_state(), state)  # no dropout, no draw from torch's generator
    assert model.training and evaluate(model)["val_loss"] == first
    assert ev.lm_evaluator(SPLIT, T, 4, 2, "cpu", seed=4)(model)["val_loss"] != first
    # the mean over 8 of the whole split's windows, drawn without replacement by numpy's seeded generator
    ref = chunked_token_losses(model.eval(), torch.from_numpy(SPLIT.astype(np.int64)), T)
    windows = [ref[b : b + T] for b in range(0, len(ref), T)]
    pick = np.random.default_rng(3).choice(len(windows), size=8, replace=False)
    assert first == pytest.approx(np.concatenate([windows[k] for k in pick]).mean(), rel=1e-6)
    assert first != pytest.approx(ref.mean(), rel=1e-4)  # an estimate, not the whole split
    with pytest.raises(ValueError, match="n_windows must be >= 1"):
        ev.heldout_loss(model, SPLIT, n_windows=0)


@pytest.mark.parametrize("score", [ev.heldout_loss, ev.token_losses])
def test_held_out_scoring_gives_the_model_back_in_its_mode_even_after_an_error(score):
    """A model scored between training steps keeps its dropout afterwards, also when the scoring
    fails (here ids of another tokenizer, outside the model's vocabulary)."""
    model = tiny_gpt(20, block_size=8).train()
    score(model, [1, 2, 3, 4, 5])
    assert model.training
    with pytest.raises(IndexError):
        score(model, [1, 2, 3, 25])
    assert model.training
    score(model.eval(), [1, 2, 3, 4, 5])
    assert not model.training


@pytest.mark.parametrize("n,T,stride", [(40, 16, 5), (40, 16, 16), (17, 16, 8), (5, 16, 8), (2, 4, 1), (33, 8, 3)])
def test_sliding_windows_score_every_token_once_with_enough_context(n, T, stride):
    counts = np.zeros(n, dtype=int)
    for begin, end, n_new in ev.sliding_windows(n, T, stride):
        assert 0 < end - begin <= T and 1 <= n_new <= end - begin
        for p in range(end - n_new + 1, end + 1):  # target positions counted by this window
            counts[p] += 1
            if begin > 0:
                assert p - begin >= T - stride  # tokens of context before p
    assert counts[0] == 0 and (counts[1:] == 1).all()


def test_sliding_window_losses_equal_a_direct_forward_per_token(char_tok):
    T, stride = 16, 5
    model = tiny_gpt(char_tok.vocab_size, block_size=T)
    ids = torch.tensor(char_tok.encode(TEXT[:45]))
    losses = ev.token_losses(model, ids, stride=stride, batch_size=2)
    assert losses.shape == (len(ids) - 1,)
    for begin, end, n_new in ev.sliding_windows(len(ids), T, stride):
        for p in range(end - n_new + 1, end + 1):
            logits, _ = model(ids[None, begin:p])  # context ids[begin:p], last position predicts p
            assert losses[p - 1] == pytest.approx(F.cross_entropy(logits[0, -1:], ids[p : p + 1]).item(), rel=1e-5)


def test_bad_stride_and_too_short_text_are_refused(char_tok):
    model = tiny_gpt(char_tok.vocab_size, block_size=8)
    with pytest.raises(ValueError, match="stride"):
        ev.lm_metrics(model, char_tok, TEXT, stride=9)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        ev.lm_metrics(model, char_tok, "R")


def test_perplexity_by_document_has_one_row_per_document(char_tok):
    model = tiny_gpt(char_tok.vocab_size)
    docs = [Document("Romeo", "romeo", "", "tragedy", TEXT[:60]), Document("Juliet", "juliet", "", "comedy", TEXT[60:])]
    df = ev.perplexity_by_document(model, char_tok, docs)
    assert df["document"].tolist() == ["Romeo", "Juliet"] and df["genre"].tolist() == ["tragedy", "comedy"]
    assert df.loc[1, "perplexity"] == pytest.approx(ev.lm_metrics(model, char_tok, TEXT[60:])["perplexity"])
    assert ev.perplexity_by_document(model, char_tok, {"a": TEXT}).loc[0, "document"] == "a"


def test_lm_by_split_scores_each_document_and_combines_each_split(char_tok):
    with pytest.raises(ValueError, match="has no column 'tokens'.*pass perplexity_by_document's rows"):
        ev.combine_lm_metrics(pd.DataFrame({"x": [1]}))  # not a KeyError
    model = tiny_gpt(char_tok.vocab_size)
    a, b, c = (Document(t, t.lower(), "", "comedy", text) for t, text in (("A", TEXT[:70]), ("B", TEXT[70:150]),
                                                                           ("C", TEXT[150:])))
    by_document, by_split = ev.lm_by_split(model, char_tok, {"val": [a, b], "test": [c]})
    assert by_document["document"].tolist() == ["A", "B", "C"]
    assert by_document["split"].tolist() == ["val", "val", "test"]
    assert by_split.index.tolist() == ["val", "test"] and list(by_split.columns) == list(ev.LM_COLUMNS)
    combined = ev.combine_lm_metrics([ev.lm_metrics(model, char_tok, d.text) for d in (a, b)])
    assert by_split.loc["val"].to_dict() == pytest.approx({k: combined[k] for k in ev.LM_COLUMNS})
    assert by_split["tokens"].dtype.kind == "i" and by_split["characters"].dtype.kind == "i"  # counts stay integers
    with pytest.raises(ValueError, match="no splits"):
        ev.lm_by_split(model, char_tok, {})


def test_lm_compression_scores_every_variant_on_the_start_of_the_text(char_tok):
    model = tiny_gpt(char_tok.vocab_size)
    docs = [Document("A", "a", "", "comedy", TEXT[:70]), Document("B", "b", "", "comedy", TEXT[70:])]
    table = ev.lm_compression(model, char_tok, docs, max_chars=100, sparsities=(0.5,), runs=1)
    start = "\n\n".join(d.text for d in docs)[:100]  # the documents joined as a split's text, then cut
    assert table["variant"].tolist() == ["baseline", "int8", "prune-50%"] and (table["characters"] == 100).all()
    assert table.loc[0, "perplexity"] == pytest.approx(ev.lm_metrics(model, char_tok, start)["perplexity"])
    assert ev.lm_compression(model, char_tok, TEXT, max_chars=10_000, sparsities=(), runs=1).loc[0, "characters"] \
        == len(TEXT)  # a shorter text is scored whole
    with pytest.raises(ValueError, match="max_chars must be at least 2"):
        ev.lm_compression(model, char_tok, TEXT, max_chars=1)




# ------------------------------------------------------------------------------------- figures
def test_evaluation_figures_show_their_data():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.35, 0.65], [0.4, 0.6]])
    ece, bins = mt.calibration(probs, [0, 1, 1, 0], n_bins=5)
    fig = viz.reliability_diagram(bins, ece=ece)
    bars, points, diagonal = fig.data
    full = bins[bins["count"] > 0]
    assert list(bars.y) == full["accuracy"].tolist() and list(bars.width) == pytest.approx([0.2] * len(full))
    assert list(points.x) == full["confidence"].tolist() and list(diagonal.x) == [0, 1]
    assert "ECE" in fig.layout.title.text

    m = np.array([[3, 1], [0, 0]])
    (heat,) = viz.confusion_figure(m, ["comedy", "tragedy"]).data
    assert np.array(heat.z).tolist() == m.tolist() and list(heat.x) == ["comedy", "tragedy"]
    assert np.array(heat.customdata).tolist() == [[0.75, 0.25], [0, 0]]  # row shares; an empty row stays 0
    with pytest.raises(ValueError, match="one label per class"):
        viz.confusion_figure(m, ["a"])

    table = pd.DataFrame({"variant": ["baseline", "int8"], "size_mb": [4.0, 1.5], "perplexity": [60.0, 61.0]})
    (pts,) = viz.compression_figure(table).data
    assert list(pts.text) == ["baseline", "int8"] and list(pts.y) == [60.0, 61.0]
    with pytest.raises(ValueError, match="compression_table"):
        viz.compression_figure(table, y="macro_f1")

    docs = pd.DataFrame({"document": ["A", "B", "C"], "genre": ["comedy", "tragedy", "comedy"],
                         "bits_per_char": [2.0, 2.5, 2.2]})
    fig = viz.perplexity_by_document_figure(docs)
    assert [t.name for t in fig.data] == ["comedy", "tragedy"] and list(fig.data[0].x) == ["A", "C"]
    assert list(fig.layout.xaxis.categoryarray) == ["A", "B", "C"]


# -------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 20-step char-level run on a small play-shaped text (its own encoded-data cache)."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = random.Random(0)
    words = "the king queen of love and night shall speak to my lord with gentle heart sweet fair".split()
    lines = []
    for _ in range(60):
        lines += [rng.choice(["KING:", "QUEEN:"])] + [" ".join(rng.choices(words, k=6)).capitalize() + "."
                                                     for _ in range(3)] + [""]
    corpus = root / "plays.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    config = RunConfig(data=DataConfig(corpus=str(corpus), tokenizer="char"),
                       model=ModelConfig(block_size=32, n_layer=1, n_head=2, n_embd=32),
                       train=TrainConfig(batch_size=8, max_iters=20, warmup_iters=2, eval_interval=10,
                                         eval_iters=None, device="cpu", seed=0))  # the whole val split
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_CACHE", str(root / "cache"))
        pretrain(config, root / "run", progress=False)
        yield root / "run"


def test_cli_evaluate_writes_metrics_json(tiny_run, tmp_path):
    out = tmp_path / "eval"
    code, stdout, err = cli("evaluate", "--checkpoint", tiny_run, "--out", out, "--prompts", 2,
                            "--compression-chars", 400)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"lm", "generation", "compression", "timings_s", "split", "tokenizer"} <= set(metrics)
    assert metrics["split"] == "val" and metrics["tokenizer"] == "char"
    # the same rule on the same ids as training's evaluation: the run's own val_loss
    assert metrics["val_loss"] == pytest.approx(json.loads((tiny_run / "metrics.json").read_text())["val_loss"],
                                                rel=1e-6)
    lm = metrics["lm"]
    assert lm["cross_entropy"] == pytest.approx(metrics["val_loss"], rel=1e-6)  # one text: the whole split
    assert {"tokens", "characters", "bytes", "cross_entropy", "perplexity", "bits_per_token", "bits_per_char",
            "bits_per_byte"} <= set(lm)
    assert lm["perplexity"] == pytest.approx(math.exp(lm["cross_entropy"])) and lm["bits_per_char"] > 0
    assert [g["strategy"] for g in metrics["generation"]] == list(DEFAULT_STRATEGIES)
    assert all(0 <= g["bleu"] <= 100 and 0 <= g["chrf"] <= 100 and g["samples"] == 2 for g in metrics["generation"])
    assert [c["variant"] for c in metrics["compression"]] == ["baseline", "int8", "prune-25%", "prune-50%", "prune-75%"]
    assert metrics["compression"][1]["sparsity"] is None  # NaN is written as null: strict JSON
    assert f"{lm['bits_per_char']:.4f} bits/char" in stdout
    assert f"val loss: {metrics['val_loss']:.4f} nats/token" in stdout
    int8 = metrics["compression"][1]
    assert f"int8: {int8['size_mb']:.2f} MB, perplexity {int8['perplexity']:.2f} ({int8['delta_perplexity']:+.2f})" \
        in stdout.splitlines()


def test_run_metrics_give_the_split_loss_of_the_final_weights_and_refuse_a_damaged_file(tiny_run, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tiny_run.parent / "cache"))
    model, tokenizer, config = load_pretrained(tiny_run)
    # what notebook 04 reads instead of scoring the split again
    assert run_metrics(tiny_run)["val_loss"] == pytest.approx(ev.split_loss(model, tokenizer, config, "val"), rel=1e-6)
    (tmp_path / "metrics.json").write_text('{"val_loss": 1.2', encoding="utf-8")  # cut short
    with pytest.raises(DamagedCheckpointError, match="metrics.json is damaged") as e:
        run_metrics(tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(DamagedCheckpointError, match="is missing"):
        run_metrics(tmp_path / "nowhere")


@pytest.mark.parametrize("extra,fix", [(["--split", "test"], "use --split val"),
                                       (["--prompts", "-1"], "n_prompts must be >= 0"),
                                       (["--max-chars", "1"], "max_chars must be at least 2"),
                                       (["--compression-chars", "1"], "compression_chars must be 0 (skip compression) or")])
def test_cli_evaluate_bad_input_is_one_error_line(tiny_run, tmp_path, extra, fix):
    code, _, err = cli("evaluate", "--checkpoint", tiny_run, "--out", tmp_path / "e", *extra)
    assert code == 2 and err.startswith("error: ") and fix in err and err.count("\n") == 1
    assert not (tmp_path / "e").exists()


def test_cli_evaluate_writes_beside_the_runs_folders_never_inside_one_training_replaces(tiny_run, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("WORKBENCH_CACHE", str(tiny_run.parent / "cache"))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    step = sorted((run / "checkpoints").glob("step-*"))[-1]
    for checkpoint in (run, run / "model", step):
        code, _, err = cli("evaluate", "--checkpoint", checkpoint, "--prompts", 0, "--compression-chars", 0)
        assert code == 0, err
        assert (run / "evaluation-val" / "metrics.json").is_file()  # a resume swaps model/ and prunes step folders
        assert not (run / "model" / "evaluation-val").exists() and not (step / "evaluation-val").exists()
        if checkpoint != step:
            shutil.rmtree(run / "evaluation-val")
    card = (run / "evaluation-val" / "metrics.json").read_text()
    before = {p: p.read_bytes() for p in (run / "metrics.json", run / "model" / "model.safetensors")}
    for out, fix in ((None, "already holds an evaluation (metrics.json); choose another --out, or delete it"),
                     (run, "is inside the run that training writes to"), (run / "model", "is inside the run"),
                     (step / "x", "is inside the run")):
        code, _, err = cli("evaluate", "--checkpoint", run, "--prompts", 0, "--compression-chars", 0,
                           *(["--out", out] if out else []))
        assert code == 2 and err.count("\n") == 1 and fix in err, err
    (tmp_path / "link").symlink_to(run / "model")  # model/ by another name: the card still goes beside it
    code, _, err = cli("evaluate", "--checkpoint", tmp_path / "link", "--prompts", 0, "--compression-chars", 0)
    assert code == 2 and "already holds an evaluation" in err and not (run / "model" / "evaluation-val").exists()
    assert (run / "evaluation-val" / "metrics.json").read_text() == card  # nothing written is lost
    assert all(p.read_bytes() == b for p, b in before.items())
    code, _, err = cli("evaluate", "--checkpoint", run, "--out", run / "metrics.json" / "x")
    assert code == 2 and err.count("\n") == 1 and "lies under" in err and "a file; choose another path for --out" in err


def test_cli_evaluate_missing_checkpoint(tmp_path):
    code, _, err = cli("evaluate", "--checkpoint", tmp_path / "nope", "--out", tmp_path / "e")
    assert code == 2 and err.startswith("error: ") and "does not exist" in err


def test_held_out_documents_are_the_runs_own_corpus():
    """The plays: every validation and test play, each cut to max_chars; another corpus: the end of its
    text (its val split) as one document, and no test split (04 scores the run's corpus with these)."""
    from workbench.data import VAL_PLAYS, load_corpus
    from workbench.evaluate import held_out_documents

    plays = held_out_documents(load_corpus("shakespeare"), max_chars=50)
    assert {d.slug for d in plays["val"]} == set(VAL_PLAYS)
    assert plays["test"] and all(len(d.text) == 50 for d in plays["val"] + plays["test"])
    corpus = Corpus("mine.txt", [], {"train": "a" * 90, "val": "b" * 10, "test": ""}, "x")
    own = held_out_documents(corpus, max_chars=4)
    assert list(own) == ["val"] and [d.text for d in own["val"]] == ["bbbb"]
