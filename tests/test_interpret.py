"""interpret: ablating a head removes exactly its contribution, the induction score finds a planted
induction head and no other, the logit lens's last layer is the model's own output, and weight
snapshots round-trip; the figures carry those numbers."""

import copy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F
from helpers import causal_uniform

from workbench import interpret
from workbench.config import ModelConfig
from workbench.model import GPT
from workbench.pretrain import WeightSnapshots
from workbench.viz import interpret as vi


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{**dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=16), **kw})).eval()


def windows(n=4, T=12, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, T + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


def test_heldout_windows_are_spread_and_shifted_by_one():
    ids = np.arange(100)
    x, y = interpret.heldout_windows(ids, block_size=10, n_windows=3)
    assert x[:, 0].tolist() == [0, 40, 80] and torch.equal(y, x + 1)
    assert interpret.heldout_windows(ids, 10, 50)[0].shape == (9, 10)  # only 9 whole windows fit
    with pytest.raises(ValueError, match="pass a longer text"):
        interpret.heldout_windows(np.arange(5), 10, 1)


def test_zero_ablating_a_head_equals_zeroing_its_columns_of_c_proj():
    model = tiny()
    x, y = windows()
    table = interpret.head_ablation(model, x, y)
    assert len(table) == 8 and table["base_loss"].iloc[0] == pytest.approx(F.cross_entropy(
        model(x)[0].flatten(0, 1), y.flatten()).item())
    layer, head, hs = 1, 2, 4
    by_hand = copy.deepcopy(model)
    with torch.no_grad():
        by_hand.transformer.h[layer].attn.c_proj.weight[:, head * hs:(head + 1) * hs] = 0
    loss = F.cross_entropy(by_hand(x)[0].flatten(0, 1), y.flatten()).item()
    row = table[(table["layer"] == layer) & (table["head"] == head)].iloc[0]
    assert row["zero_loss"] == pytest.approx(loss, abs=1e-6)
    assert row["zero_delta"] == pytest.approx(loss - row["base_loss"], abs=1e-6) and row["zero_delta"] != 0


def test_mean_ablation_equals_folding_the_head_mean_into_the_c_proj_bias():
    model = tiny()
    x, y = windows()
    for bad_x, bad_y in ((x, y[:, :5]), (x[0], y[0])):  # torch's batch-size error, an IndexError
        with pytest.raises(ValueError, match=r"x and y must both be \(B, T\) windows"):
            interpret.head_ablation(model, bad_x, bad_y)
    table = interpret.head_ablation(model, x, y, kinds=["mean"])
    layer, head, hs = 0, 1, 4
    _, cache = model.run_with_cache(x, [f"transformer.h.{layer}.attn.hook_z"])
    mean = cache[f"transformer.h.{layer}.attn.hook_z"][:, :, head].mean(dim=(0, 1))  # (hs,)
    by_hand = copy.deepcopy(model)
    with torch.no_grad():
        proj = by_hand.transformer.h[layer].attn.c_proj
        cols = proj.weight[:, head * hs:(head + 1) * hs]
        proj.bias += cols @ mean  # the constant the mean output would add
        cols.zero_()
    loss = F.cross_entropy(by_hand(x)[0].flatten(0, 1), y.flatten()).item()
    row = table[(table["layer"] == layer) & (table["head"] == head)].iloc[0]
    assert row["mean_loss"] == pytest.approx(loss, abs=1e-5)
    assert "zero_loss" not in table
    with pytest.raises(ValueError, match="unknown ablation 'half'"):
        interpret.head_ablation(model, x, y, kinds=["half"])


def test_rank_correlations_are_one_for_a_monotone_statistic_and_minus_one_reversed():
    table = pd.DataFrame({"mean_delta": [0.1, 0.5, 0.2, 0.9], "prev_token": [1, 3, 2, 4],
                          "first_token": [4, 2, 3, 1], "entropy": [1, 1, 1, 1], "self_token": [0, 1, 0, 1]})
    r = interpret.rank_correlations(table).set_index("statistic")["spearman"]
    assert r["prev_token"] == pytest.approx(1.0) and r["first_token"] == pytest.approx(-1.0)
    assert np.isnan(r["entropy"])  # a constant column has no ranking
    with pytest.raises(ValueError, match="merge head_ablation with viz.head_summary"):
        interpret.rank_correlations(table.drop(columns="entropy"))


def test_top_heads_report_lists_the_costliest_heads_with_their_ranks():
    table = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "mean_delta": [0.1, 0.5, 0.2, 0.9],
                          "zero_delta": [0.2, 0.6, 0.3, 1.0], "prev_token": [0.1, 0.3, 0.2, 0.4],
                          "first_token": [0.4, 0.2, 0.3, 0.1], "entropy": [2.0, 1.0, 3.0, 4.0],
                          "self_token": [0.0, 0.1, 0.0, 0.1]})
    report = interpret.top_heads_report(table, interpret.rank_correlations(table), n=2).splitlines()
    assert len(report) == 4
    # L1H1 costs most and has the highest prev_token (rank 1), the lowest first_token (rank 4)
    assert report[1].startswith("  L1H1: +0.9000 nats/token (mean_delta), +1.0000 (zero_delta)")
    assert report[1].endswith("rank by entropy 1, prev_token 1, first_token 4, self_token 1")
    assert report[2].startswith("  L0H1: +0.5000") and "entropy 4" in report[2]
    # prev_token's +1 ties first_token's -1 in size: the first listed wins
    assert report[3] == "The statistic that ranks heads most like their ablation effect: prev_token (Spearman +1.00 over 4 heads)"
    # a negative correlation is said to rank against the effect; effects at noise level are called noise
    tiny = table.assign(mean_delta=table["mean_delta"] * 1e-4, prev_token=table["first_token"])
    report = interpret.top_heads_report(tiny, interpret.rank_correlations(tiny)[lambda r: r["statistic"] != "self_token"])
    assert ("ranks heads most against their ablation effect (the higher a head's prev_token, the less its ablation "
            "costs): prev_token (Spearman -1.00 over 4 heads)") in report
    assert report.endswith("No ablation costs more than 9.0e-05 nats/token: at that level the ranks are noise, "
                           "not evidence (a model trained longer shows real effects)")
    with pytest.raises(ValueError, match="pass head_ablation merged with pattern_statistics"):
        interpret.top_heads_report(table.drop(columns="zero_delta"), interpret.rank_correlations(table))


# ----------------------------------------------------------------- a planted induction circuit
V, L = 8, 6  # vocabulary, length of each copy


def planted_induction_model() -> GPT:
    """A 2-layer, 4-head GPT whose only attention is a previous-token head (layer 0, head 0) and an
    induction head (layer 1, head 0) built on it; every other weight that could attend or write is zero.

    Residual channels: token one-hot [0, 8), position one-hot [8, 24), previous token [24, 32).
    """
    cfg = ModelConfig(vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=64, bias=False, tie_weights=False)
    model = GPT(cfg).eval()
    C, hs, scale = 64, 16, 4.0
    tok, pos, prev = 0, 8, 24
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in [model.transformer.ln_f] + [m for b in model.transformer.h for m in (b.ln_1, b.ln_2)]:
            ln.weight.fill_(1.0)
        model.transformer.wte.weight[:, tok:tok + V] = torch.eye(V)
        model.transformer.wpe.weight[:, pos:pos + 16] = torch.eye(16)
        # layer 0, head 0: query at position t matches the key of position t - 1; the value is the token
        attn0 = model.transformer.h[0].attn
        W_q, W_k, W_v = attn0.c_attn.weight.split(C, dim=0)  # each (C out, C in); head 0 = rows [0, hs)
        for t in range(16):
            W_q[t, pos + t] = scale
            if t + 1 < 16:
                W_k[t + 1, pos + t] = scale
        W_v[:V, tok:tok + V] = torch.eye(V)
        attn0.c_proj.weight[prev:prev + V, :V] = torch.eye(V)  # head 0's dims -> previous-token channels
        # layer 1, head 0: query = current token, key = the previous token written by layer 0
        W_q, W_k, _ = model.transformer.h[1].attn.c_attn.weight.split(C, dim=0)
        W_q[:V, tok:tok + V] = scale * torch.eye(V)
        W_k[:V, prev:prev + V] = scale * torch.eye(V)
    return model


def permuted_repeats(batch=8, seed=0):
    """Repeated sequences with no token twice within a copy, so each has one induction target."""
    g = torch.Generator().manual_seed(seed)
    first = torch.stack([torch.randperm(V, generator=g)[:L] for _ in range(batch)])
    return torch.cat([first, first], dim=1)


def test_the_induction_score_finds_the_planted_head_and_no_other():
    model = planted_induction_model()
    scores = interpret.induction_scores(model, permuted_repeats()).set_index(["layer", "head"])["induction_score"]
    assert scores[(1, 0)] > 0.9
    assert scores.drop(index=(1, 0)).max() < 0.3
    # the layer-0 head really is the previous-token head the circuit reads
    from workbench.capture import head_summary
    _, cache = model.run_with_cache(permuted_repeats(), lambda n: n.endswith("hook_pattern"))
    summary = head_summary(cache["transformer.h.0.attn.hook_pattern"].mean(0)[None])
    assert summary.loc[0, "prev_token"] > 0.9
    with pytest.raises(ValueError, match="repeated_tokens"):
        interpret.induction_scores(model, torch.arange(12)[None] % V)


def test_repeated_tokens_and_copy_losses_on_a_random_model():
    idx = interpret.repeated_tokens(vocab_size=50, length=6, batch=3, seed=1)
    assert idx.shape == (3, 12) and torch.equal(idx[:, :6], idx[:, 6:])
    losses = interpret.copy_losses(tiny(), idx)
    # an untrained model cannot copy: both copies cost about log(vocab)
    assert losses["first_copy_loss"] == pytest.approx(np.log(50), abs=0.3)
    assert losses["second_copy_loss"] == pytest.approx(np.log(50), abs=0.3)


def test_weight_snapshots_round_trip_and_feed_induction_over_checkpoints(tmp_path):
    callback = WeightSnapshots(tmp_path / "snaps", every=2)
    models = {step: tiny(n_embd=16) for step in (2, 4)}
    with torch.no_grad():
        models[4].transformer.wte.weight.mul_(2)
    for step in (1, 2, 3, 4):  # only every second step is kept
        callback.on_step(SimpleNamespace(step=step, model=models.get(step, tiny()), dist=SimpleNamespace(is_main=True)), {})
    found = interpret.snapshot_steps(tmp_path / "snaps")
    assert [s for s, _ in found] == [2, 4]
    model = interpret.load_snapshot(tiny(), found[1][1])
    assert torch.equal(model.transformer.wte.weight, models[4].transformer.wte.weight)
    idx = interpret.repeated_tokens(50, 6, 2)
    scores, by_step = interpret.induction_over_checkpoints(tiny(), found, idx)
    assert len(scores) == 2 * 8 and by_step["step"].tolist() == [2, 4]
    expected = interpret.induction_scores(models[4], idx)["induction_score"].max()
    assert by_step["max_induction_score"].iloc[1] == pytest.approx(expected)
    with pytest.raises(ValueError, match="every must be >= 1"):
        WeightSnapshots(tmp_path, every=0)


def test_induction_probe_is_the_five_steps_it_replaces(tmp_path):
    callback = WeightSnapshots(tmp_path / "snaps", every=1)
    for step in (1, 2, 3):
        m = tiny()
        with torch.no_grad():
            m.transformer.wte.weight.mul_(step)
        callback.on_step(SimpleNamespace(step=step, model=m, dist=SimpleNamespace(is_main=True)), {})
    snapshots = interpret.snapshot_steps(tmp_path / "snaps")
    model = tiny(n_embd=16)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(4)  # the final model is none of the snapshots
    heads = pd.DataFrame({"layer": [0, 0, 0, 0, 1, 1, 1, 1], "head": [0, 1, 2, 3] * 2, "mean_delta": np.arange(8.0),
                          "prev_token": np.linspace(0, 1, 8), "zero_delta": 1.0})
    probe = interpret.induction_probe(model, snapshots, 6, 3, heads=heads)
    # what 06_interpretability's induction cell computed before, step by step
    repeated = interpret.repeated_tokens(model.config.vocab_size, 6, 3, seed=0)
    scores, by_step = interpret.induction_over_checkpoints(GPT(model.config), snapshots, repeated)
    final = interpret.induction_scores(model, repeated).merge(heads[["layer", "head", "mean_delta", "prev_token"]])
    pd.testing.assert_frame_equal(probe.scores, scores)
    pd.testing.assert_frame_equal(probe.by_step, by_step)
    assert probe.summary == interpret.induction_summary(scores, by_step, 6)
    pd.testing.assert_frame_equal(probe.final, final)
    assert list(probe.final.columns) == ["layer", "head", "induction_score", "mean_delta", "prev_token"]
    assert probe.final_copy == interpret.copy_losses(model, repeated)
    assert probe.final_copy != by_step.iloc[-1][["first_copy_loss", "second_copy_loss"]].to_dict()  # the model's own
    assert torch.equal(model.transformer.wte.weight, tiny().transformer.wte.weight * 4)  # its weights kept
    with pytest.raises(ValueError, match=r"heads has no column 'prev_token'"):
        interpret.induction_probe(model, snapshots, 6, 3, heads=heads.drop(columns="prev_token"))


def test_first_step_above_a_threshold():
    scores = pd.DataFrame({"step": [10, 10, 20, 20, 30, 30], "layer": [1, 1, 1, 1, 1, 1], "head": [0, 1] * 3,
                           "induction_score": [0.1, 0.2, 0.6, 0.3, 0.8, 0.55]})
    first = interpret.first_step_above(scores, 0.5)
    assert first[["head", "step"]].values.tolist() == [[0, 20], [1, 30]]


def test_a_uniform_causal_head_scores_the_harmonic_formula_and_an_induction_head_one():
    L = 5
    # query L + i sees L + i + 1 keys: the mean of 1/6, ..., 1/10 over the 5 queries
    expected = (1 / 6 + 1 / 7 + 1 / 8 + 1 / 9 + 1 / 10) / 5
    assert interpret.uniform_induction_score(L) == pytest.approx(expected, rel=1e-12)
    assert interpret.pattern_induction_scores(causal_uniform(2 * L)[None, None]).item() == pytest.approx(expected, rel=1e-6)
    assert interpret.uniform_induction_score(1000) == pytest.approx(np.log(2) / 1000, rel=1e-3)  # about ln 2 / L
    perfect, previous = torch.zeros(1, 1, 2 * L, 2 * L), torch.zeros(1, 1, 2 * L, 2 * L)
    for i in range(L):
        perfect[0, 0, L + i, i + 1] = 1.0  # from the second copy's token to the one after its first occurrence
    previous[0, 0, 1:, :-1] = torch.eye(2 * L - 1)
    assert interpret.pattern_induction_scores(perfect).item() == pytest.approx(1.0)
    assert interpret.pattern_induction_scores(previous).item() == 0.0  # a previous-token head is no induction head
    # a GPT whose queries and keys are all zero attends uniformly in every head
    model = tiny()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight.zero_()
            block.attn.c_attn.bias.zero_()
    scores = interpret.induction_scores(model, interpret.repeated_tokens(50, L, 3))["induction_score"]
    assert scores.to_numpy() == pytest.approx(np.full(8, expected), rel=1e-5)
    with pytest.raises(ValueError, match="length must be >= 1"):
        interpret.uniform_induction_score(0)
    with pytest.raises(ValueError, match="pass attn.hook_pattern"):
        interpret.pattern_induction_scores(torch.zeros(1, 1, 5, 5))


def snapshot_tables(induction: list[float], first: list[float], second: list[float]):
    """induction_over_checkpoints-like tables at steps 10, 20, ...: head L1H0 scores `induction`,
    L0H0 a uniform-ish 0.05; the copy losses per step."""
    steps = [10 * (k + 1) for k in range(len(induction))]
    scores = pd.DataFrame([{"step": st, "layer": l, "head": 0, "induction_score": v}
                           for st, v in zip(steps, induction) for l, v in ((0, 0.05), (1, v))])
    by_step = pd.DataFrame({"step": steps, "first_copy_loss": first, "second_copy_loss": second})
    return scores, by_step


def test_induction_summary_says_whether_an_induction_circuit_formed():
    # nothing formed: scores at the uniform level, the second copy no better than the first
    summary = interpret.induction_summary(*snapshot_tables([0.04, 0.09, 0.03], [8.0, 9.0, 9.5], [8.0, 9.1, 9.6]), L)
    assert summary["uniform_score"] == pytest.approx(interpret.uniform_induction_score(L))
    assert summary["heads_above"] == 0 and summary["first_above"] is None and summary["copy_better_from"] is None
    assert (summary["best_head"], summary["best_score"]) == ("L0H0", 0.05)  # at the last snapshot
    assert (summary["peak_head"], summary["peak_step"], summary["peak_score"]) == ("L1H0", 20, 0.09)
    assert (summary["last_step"], summary["first_copy_loss"], summary["second_copy_loss"]) == (30, 9.5, 9.6)
    assert not summary["formed"]
    assert summary["verdict"].startswith("No induction circuit formed at this budget: no head exceeded an "
                                         "induction score of 0.5 at any of 3 snapshots")
    assert "never predicted at least 0.1 nats/token better" in summary["verdict"]
    # formed: L1H0 jumps at step 20; the second copy beats the first by more than the margin from step 30
    summary = interpret.induction_summary(*snapshot_tables([0.1, 0.7, 0.9], [8.0, 8.0, 8.0], [7.95, 7.95, 2.0]), L)
    assert summary["formed"] and summary["heads_above"] == 1 and summary["first_above"] == "L1H0@20"
    assert summary["copy_better_from"] == 30  # step 10 and 20 are better by 0.05 only, under the 0.1 margin
    assert summary["verdict"].startswith("Induction heads formed: 1 head(s) exceeded an induction score of 0.5, "
                                         "the first L1H0 at step 20")
    # the two signs disagree
    summary = interpret.induction_summary(*snapshot_tables([0.1, 0.7], [8.0, 8.0], [8.0, 8.0]), L)
    assert not summary["formed"] and summary["verdict"].startswith("An induction pattern formed without")
    assert ", but the second copy was never" in summary["verdict"]
    with pytest.raises(ValueError, match="pass a larger one"):
        interpret.induction_summary(*snapshot_tables([0.1], [8.0], [8.0]), L, threshold=0.05)
    with pytest.raises(ValueError, match="pass induction_over_checkpoints' two tables"):
        interpret.induction_summary(pd.DataFrame(), pd.DataFrame(), L)


# ----------------------------------------------------------------- the logit lens
def test_the_last_layer_of_the_logit_lens_is_the_models_own_logits():
    model = tiny()
    x, y = windows()
    lens = interpret.logit_lens(model, x)
    assert lens.shape == (3, 4, 12, 50)
    torch.testing.assert_close(lens[-1], model(x)[0])
    embed = model.transformer.wte(x) + model.transformer.wpe(torch.arange(12))
    torch.testing.assert_close(lens[0], model.lm_head(model.transformer.ln_f(embed)))
    metrics = interpret.logit_lens_metrics(model, x, y)
    assert metrics["layer"].tolist() == ["embed", "block 0", "block 1"]
    last = metrics.iloc[-1]
    assert last["loss"] == pytest.approx(F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten()).item(), abs=1e-6)
    assert last["accuracy"] == pytest.approx((model(x)[0].argmax(-1) == y).float().mean().item())
    top = lens.argmax(-1)  # (D, B, T): how often each depth predicts the token it was given
    assert metrics["top_is_input"].tolist() == pytest.approx([(t == x).float().mean().item() for t in top])


class LetterTokenizer:
    """One token per letter a..z (ids 0..25), displayed as itself, in the 50-token vocabulary of `tiny`;
    the predictions beyond 25 show as "#id"."""

    vocab_size = 50

    def encode(self, text):
        return [ord(c) - ord("a") for c in text]

    def tokens(self, ids):
        return [chr(ord("a") + i) if i < 26 else f"#{i}" for i in ids]


def test_logit_lens_top_tokens_label_positions_uniquely():
    model = tiny()
    top, prob = interpret.logit_lens_top_tokens(model, LetterTokenizer(), "abac")
    assert list(top.columns) == ["0:a", "1:b", "2:a", "3:c"] and list(top.index) == ["embed", "block 0", "block 1"]
    logits = model(torch.tensor([[0, 1, 0, 2]]))[0][0]
    assert top.loc["block 1"].tolist() == LetterTokenizer().tokens(logits.argmax(-1).tolist())
    assert prob.loc["block 1"].to_numpy() == pytest.approx(logits.softmax(-1).max(-1).values.detach().numpy(), abs=1e-6)
    assert interpret.logit_lens_top_tokens(model, LetterTokenizer(), "ab" * 20)[0].shape == (3, 16)  # the last block_size
    with pytest.raises(ValueError, match="non-empty text"):
        interpret.logit_lens_top_tokens(model, LetterTokenizer(), "")


def test_pattern_statistics_average_head_summary_over_windows():
    from workbench.capture import head_summary

    model = tiny()
    x, _ = windows(n=2)
    stats = interpret.pattern_statistics(model, x)
    _, cache = model.run_with_cache(x[1:], lambda n: n.endswith("hook_pattern"))
    second = head_summary(torch.stack([cache[f"transformer.h.{l}.attn.hook_pattern"][0] for l in range(2)]))
    _, cache = model.run_with_cache(x[:1], lambda n: n.endswith("hook_pattern"))
    first = head_summary(torch.stack([cache[f"transformer.h.{l}.attn.hook_pattern"][0] for l in range(2)]))
    assert stats["entropy"].to_numpy() == pytest.approx((first["entropy"] + second["entropy"]).to_numpy() / 2)
    assert stats["prev_token"].to_numpy() == pytest.approx((first["prev_token"] + second["prev_token"]).to_numpy() / 2)


def test_logit_lens_top_tokens_sends_the_ids_to_the_models_device(monkeypatch):
    """The probe's ids go where the model is (a GPU model would otherwise get CPU ids). No GPU here:
    the model sits on the meta device and the lens is a stub that records where its ids were."""
    seen = []

    def lens(model, idx):
        seen.append(idx.device)
        return torch.zeros(3, *idx.shape, 50)

    monkeypatch.setattr(interpret, "logit_lens", lens)
    top, _ = interpret.logit_lens_top_tokens(tiny().to("meta"), LetterTokenizer(), "abc")
    assert seen == [torch.device("meta")] and top.shape == (3, 3)


INTERPRETATIONS = {  # each given (B, 2L) repeated ids, so induction_scores takes them too
    "head_ablation": lambda model, ids: interpret.head_ablation(model, ids, ids),
    "pattern_statistics": interpret.pattern_statistics,
    "induction_scores": interpret.induction_scores,
    "copy_losses": interpret.copy_losses,
    "logit_lens": interpret.logit_lens,
}


@pytest.mark.parametrize("name", INTERPRETATIONS)
def test_interpretation_runs_in_eval_mode_and_restores_the_models_mode(name):
    """Each runs the model without dropout and gives it back in the mode it came in, also after an
    error, so a model still training keeps its dropout."""
    call = INTERPRETATIONS[name]
    model = tiny(dropout=0.5).train()
    modes = []
    model.transformer.h[0].register_forward_pre_hook(lambda module, args: modes.append(module.training))
    call(model, interpret.repeated_tokens(50, 4, 2))
    assert model.training and modes and not any(modes)
    with pytest.raises(IndexError):
        call(model, torch.full((2, 8), 99))  # ids outside the 50-token vocabulary
    assert model.training
    call(model.eval(), interpret.repeated_tokens(50, 4, 2))
    assert not model.training


# ----------------------------------------------------------------- figures
def test_ablation_figure_switches_between_zero_and_mean():
    table = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "zero_delta": [0.1, 0.2, 0.3, 0.4],
                          "mean_delta": [0.0, 0.1, 0.5, 0.2]})
    fig = vi.ablation_figure(table)
    assert [t.name for t in fig.data] == ["mean ablation", "zero ablation"]
    assert fig.data[0].z.tolist() == [[0.0, 0.1], [0.5, 0.2]] and fig.data[1].visible is False
    assert fig.layout.updatemenus[0].buttons[1].args[0]["visible"] == [False, True]
    with pytest.raises(ValueError, match="head_ablation"):
        vi.ablation_figure(table.drop(columns="zero_delta"))
    scatter = vi.importance_vs_pattern_figure(table.assign(prev_token=[0.9, 0.1, 0.2, 0.3], first_token=0.0,
                                                           entropy=1.0, self_token=0.0))
    assert scatter.data[0].x.tolist() == [0.9, 0.1, 0.2, 0.3] and list(scatter.data[0].text) == ["L0H0", "L0H1", "L1H0", "L1H1"]


def test_heads_are_named_by_one_function_in_reports_and_figures():
    assert interpret.head_name(1, 3) == "L1H3" and interpret.head_name(np.int64(0), 2.0) == "L0H2"
    # a table whose layer and head came back as floats (a merge, a CSV) still labels "L1H0", not "L1.0H0.0"
    table = pd.DataFrame({"layer": [0.0, 1.0], "head": [1.0, 0.0], "mean_delta": [0.1, 0.2], "prev_token": [0.5, 0.6],
                          "first_token": 0.0, "entropy": 1.0, "self_token": 0.0})
    assert list(vi.importance_vs_pattern_figure(table).data[0].text) == ["L0H1", "L1H0"]


def test_induction_figures_carry_each_step():
    scores = pd.DataFrame({"step": [10] * 2 + [20] * 2, "layer": [0, 1] * 2, "head": [0] * 4,
                           "induction_score": [0.1, 0.2, 0.1, 0.9]})
    fig = vi.induction_over_steps_figure(scores)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["10", "20"]
    assert fig.data[1].z.tolist() == [[0.1], [0.9]]
    by_step = pd.DataFrame({"step": [10, 20], "max_induction_score": [0.2, 0.9], "first_copy_loss": [4.0, 4.0],
                            "second_copy_loss": [3.9, 1.0]})
    timeline = vi.induction_timeline_figure(by_step)
    assert [t.name for t in timeline.data] == ["max induction score", "first copy loss", "second copy loss"]
    assert timeline.data[2].y.tolist() == [3.9, 1.0]
    with_uniform = vi.induction_timeline_figure(by_step, uniform=0.05)
    assert with_uniform.data[3].name == "uniform attention" and list(with_uniform.data[3].y) == [0.05, 0.05]
    assert list(with_uniform.data[3].x) == [10, 20] and with_uniform.data[3].yaxis == "y"  # the score axis


def test_logit_lens_figures():
    model = tiny()
    top, prob = interpret.logit_lens_top_tokens(model, LetterTokenizer(), "xyx")
    fig = vi.logit_lens_figure(top, prob)
    assert list(fig.data[0].x) == ["0:x", "1:y", "2:x"] and list(fig.data[0].y) == ["embed", "block 0", "block 1"]
    assert fig.data[0].text.tolist() == top.to_numpy().tolist()
    metrics = pd.DataFrame({"layer": ["embed", "block 0"], "loss": [5.0, 3.0], "accuracy": [0.1, 0.3]})
    bars = vi.logit_lens_metrics_figure(metrics)
    assert bars.data[0].y.tolist() == [0.1, 0.3] and bars.data[1].y.tolist() == [5.0, 3.0]


# ----------------------------------------------------------------- widgets
def test_logit_lens_explorer_redraws_on_new_text_and_reports_bad_text():
    pytest.importorskip("ipywidgets")
    from workbench import viz

    model = tiny()
    w = viz.logit_lens_explorer(model, LetterTokenizer(), "abc")
    assert list(w.figure_widget.data[0].x) == ["0:a", "1:b", "2:c"]
    assert np.allclose(np.array(w.figure_widget.data[0].z), w.prob.to_numpy())
    w.text_box.value = "dd"
    assert list(w.figure_widget.data[0].x) == ["0:d", "1:d"] and w.status.value == ""
    w.text_box.value = ""
    assert "non-empty" in w.status.value and list(w.figure_widget.data[0].x) == ["0:d", "1:d"]  # the last good view stays


def test_attention_explorer_titles_show_the_head_table():
    pytest.importorskip("ipywidgets")
    from workbench import viz
    from workbench.tokenizer import CharTokenizer

    tok = CharTokenizer.train("the cat sat")
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16))
    table = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "mean_delta": [0.1, 0.2, 0.3, 0.4]})
    w = viz.attention_explorer({"gpt": (model, tok)}, "the cat", head_table=table)
    assert w.figure_widget.layout.title.text.endswith("mean_delta 0.100")
    w.layer_slider.value, w.head_slider.value = 1, 1
    assert w.figure_widget.layout.title.text.endswith(": layer 1, head 1 · mean_delta 0.400")


def test_every_profile_fits_the_induction_probe_and_snapshots_on_logging_steps():
    from workbench.profiles import PROFILES

    for name, profile in PROFILES.items():
        s, pre = profile.for_notebook("06_interpretability"), profile.pretraining
        for run in (s.gpt, pre.run):  # two copies fit whichever model 06 looks at
            assert 2 * s.induction_length <= run.model.block_size, name
        # WeightSnapshots runs on logging steps
        assert pre.snapshot_every % pre.run.train.log_interval == 0 and s.snapshot_every % s.gpt.train.log_interval == 0
        assert pre.run.train.max_iters // pre.snapshot_every >= 3, name  # enough snapshots to see a trend
