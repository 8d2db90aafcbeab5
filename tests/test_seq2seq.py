"""The encoder–decoder (workbench.seq2seq): its two attention paths and masks, decoding, checkpoints, training."""

import itertools
from dataclasses import asdict, replace

import pytest
import torch

from workbench.checkpoint import latest_checkpoint, save_checkpoint
from workbench.config import TrainConfig
from workbench.seq2seq import (Seq2Seq, Seq2SeqConfig, beam_search, cross_attention, cross_attentions, generate, greedy, length_penalty,
                               load_seq2seq, loss_evaluator, make_batch, next_log_probs, pad_sources, save_seq2seq,
                               strip_special, translate)
from workbench.train import Trainer, autocast_context

pytestmark = pytest.mark.usefixtures("one_thread")

PAD, BOS, EOS = 0, 1, 2
SRC = [[3, 4, 5, 6, 7], [8, 3], [9, 10, 4]]  # different lengths, so the batch holds source padding
TGT = [[3, 4, 5], [6], [7, 8, 3, 4]]  # and target padding
CONFIG = Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=9, n_layer=2, n_dec_layer=2, n_head=2, n_embd=16,
                       max_src_len=8, max_tgt_len=6, dropout=0.0)


def tiny(peaked: bool = False, seed: int = 0, **changes) -> Seq2Seq:
    """A seeded tiny model in eval mode. An untrained model's next-token distribution is nearly
    flat; `peaked` draws its matrices with std 0.5 so that decoding choices differ and matter."""
    torch.manual_seed(seed)
    model = Seq2Seq(replace(CONFIG, **changes)).eval()
    if peaked:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.5)
    return model


def is_pattern(name: str) -> bool:
    return name.endswith("hook_pattern")


# -------------------------------------------------------------------- config
@pytest.mark.parametrize("changes, match", [
    (dict(n_embd=15), "multiple of n_head"),
    (dict(shared_embeddings=True), "shared tokenizer's size"),
    (dict(eos_id=0), "must differ"),
    (dict(bos_id=9), "target vocabulary"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(pos_encoding="alibi"), "pick one of those"),
    (dict(max_tgt_len=0), "positive integer"),
    (dict(max_tgt_len=1), r"max_tgt_len=1 leaves no room for a target token after <bos>; .* \(at least 2\)"),
])
def test_config_rejects_bad_values_naming_the_fix(changes, match):
    with pytest.raises(ValueError, match=match):
        replace(CONFIG, **changes)


# ------------------------------------------------------------ attention paths
@pytest.mark.parametrize("pos_encoding", ["sinusoidal", "learned", "rope"])
def test_fused_and_explicit_attention_give_the_same_logits(pos_encoding):
    model = tiny(pos_encoding=pos_encoding)
    src, tgt_in, _ = make_batch(SRC, TGT, model.config)
    fused, _ = model(src, tgt_in)
    explicit, cache = model.run_with_cache(src, tgt_in, is_pattern)  # hooking a pattern runs the explicit path
    assert len(cache) == 2 + 2 * 2  # every encoder, decoder-self and cross attention went explicit
    torch.testing.assert_close(explicit, fused, rtol=0, atol=1e-5)


def test_encoder_rows_sum_to_one_over_non_pad_source_keys_only():
    model = tiny()
    src, tgt_in, _ = make_batch(SRC, TGT, model.config)
    _, cache = model.run_with_cache(src, tgt_in, is_pattern)
    real = (src != PAD)[:, None, None, :]  # (B, 1, 1, S)
    for layer in range(2):
        att = cache[f"encoder.h.{layer}.attn.hook_pattern"]  # (B, nh, S, S)
        assert att.shape == (3, 2, 5, 5)
        assert (att.masked_select(~real.expand_as(att)) == 0).all()
        torch.testing.assert_close(att.masked_fill(~real, 0).sum(-1), torch.ones(3, 2, 5))
        assert (att.masked_select(real.expand_as(att)) > 0).all()  # a bidirectional mask: no key hidden


def test_decoder_self_attention_has_nothing_above_the_diagonal():
    model = tiny()
    src, tgt_in, _ = make_batch(SRC, TGT, model.config)
    _, cache = model.run_with_cache(src, tgt_in, is_pattern)
    for layer in range(2):
        att = cache[f"decoder.h.{layer}.self_attn.hook_pattern"]  # (B, nh, T, T)
        assert att.shape == (3, 2, 5, 5)
        above = torch.ones(5, 5, dtype=torch.bool).triu(diagonal=1)
        assert (att[..., above] == 0).all() and (att[..., ~above] > 0).all()
        torch.testing.assert_close(att.sum(-1), torch.ones(3, 2, 5))


def test_cross_attention_gives_source_pads_no_weight():
    model = tiny()
    src, tgt_in, _ = make_batch(SRC, TGT, model.config)
    _, cache = model.run_with_cache(src, tgt_in, is_pattern)
    for layer in range(2):
        att = cache[f"decoder.h.{layer}.cross_attn.hook_pattern"]  # (B, nh, T, S)
        assert att.shape == (3, 2, 5, 5)
        pads = (src == PAD)[:, None, None, :].expand_as(att)
        assert (att[pads] == 0).all() and (att[~pads] > 0).all()  # no causal mask: every real source token seen
        torch.testing.assert_close(att.sum(-1), torch.ones(3, 2, 5))


@pytest.mark.parametrize("pos_encoding", ["sinusoidal", "learned", "rope"])
def test_padding_changes_no_logit_of_a_real_target_position(pos_encoding):
    model = tiny(peaked=True, pos_encoding=pos_encoding)
    src, tgt_in, tgt_out = make_batch(SRC, TGT, model.config)
    real = tgt_out != PAD  # the positions the loss reads
    logits, _ = model(src, tgt_in)
    # more padding columns on the source
    wider = torch.cat([src, torch.full((3, 2), PAD)], dim=1)
    # other tokens where the target is padded (the decoder's inputs after BOS + target)
    scrambled = tgt_in.masked_scatter(tgt_in == PAD, torch.randint(3, 9, tgt_in.shape))
    assert not torch.equal(scrambled, tgt_in)
    for s, t in ((wider, tgt_in), (src, scrambled)):
        torch.testing.assert_close(model(s, t)[0][real], logits[real], rtol=0, atol=1e-5)
    # another embedding for the pad token itself
    with torch.no_grad():
        model.src_embed.wte.weight[PAD].normal_()
    torch.testing.assert_close(model(src, tgt_in)[0][real], logits[real], rtol=0, atol=1e-5)


def test_hooks_replace_a_tapped_tensor_and_are_removed_after():
    model = tiny(peaked=True)
    src, tgt_in, _ = make_batch(SRC, TGT, model.config)
    logits, _ = model(src, tgt_in)
    seen = []
    ablate = ("decoder.h.1.cross_attn.hook_z", lambda z, hook: seen.append(hook.name) or z * 0)
    with model.hooks([ablate]):
        ablated, _ = model(src, tgt_in)
    assert seen == ["decoder.h.1.cross_attn.hook_z"]
    assert (ablated - logits).abs().max() > 1e-3  # the decoder's last cross-attention matters ...
    torch.testing.assert_close(model(src, tgt_in)[0], logits)  # ... and the hook is gone
    with pytest.raises(ValueError, match="hook_points"):
        with model.hooks([("decoder.h.0.attn.hook_z", print)]):  # the decoder has self_attn and cross_attn
            pass
    assert not any(point.hooked for point in model.hook_points().values())


def test_loss_ignores_pad_targets_and_smooths_labels():
    model = tiny(peaked=True)
    batch = make_batch(SRC, TGT, model.config)
    logits, loss = model(*batch)
    tgt_out = batch[2]
    real = tgt_out != PAD
    logp = logits.log_softmax(-1)[real]  # (N, V) the real target positions
    nll = -logp.gather(1, tgt_out[real][:, None]).mean()
    assert real.sum() == sum(len(t) + 1 for t in TGT)  # each target and its EOS
    torch.testing.assert_close(loss, nll)
    smoothed = Seq2Seq(replace(model.config, label_smoothing=0.1))
    smoothed.load_state_dict(model.state_dict())
    _, loss_ls = smoothed.eval()(*batch)
    torch.testing.assert_close(loss_ls, 0.9 * nll + 0.1 * -logp.mean())  # (1-ε)·NLL + ε·cross-entropy to uniform


def test_make_batch_shifts_the_target_and_pads():
    src, tgt_in, tgt_out = make_batch([[3, 4]], [[5, 6]], CONFIG)
    assert src.tolist() == [[3, 4]]
    assert tgt_in.tolist() == [[BOS, 5, 6]] and tgt_out.tolist() == [[5, 6, EOS]]
    with pytest.raises(ValueError, match="max_tgt_len >= 7"):
        make_batch([[3]], [[3] * 6], CONFIG)
    with pytest.raises(ValueError, match="source 1 is empty"):
        pad_sources([[3], []], CONFIG)
    with pytest.raises(ValueError, match="max_src_len=8"):
        pad_sources([[3] * 9], CONFIG)


# ------------------------------------------------------------------- decoding
def test_cached_decoding_equals_uncached():
    model = tiny(peaked=True)
    src = pad_sources(SRC, model.config)
    assert torch.equal(greedy(model, src), greedy(model, src, use_cache=False))
    sampled = generate(model, src, temperature=1.0, top_k=5, seed=3)
    assert torch.equal(sampled, generate(model, src, temperature=1.0, top_k=5, seed=3, use_cache=False))
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        generate(model, src, temperature=1.0, top_k=0)
    cached = beam_search(model, src, beam=3, n_best=3)
    uncached = beam_search(model, src, beam=3, n_best=3, use_cache=False)
    assert [[h.tokens for h in hyps] for hyps in cached] == [[h.tokens for h in hyps] for hyps in uncached]
    for a, b in zip(itertools.chain(*cached), itertools.chain(*uncached)):
        assert a.score == pytest.approx(b.score, abs=1e-5)


def test_greedy_stops_each_row_at_its_eos():
    model = tiny(peaked=True, seed=10)  # a seed whose rows end at different steps, and some never
    sources = [[3 + (i * 7 + j * 3) % 8 for j in range(1 + i % 5)] for i in range(12)]
    out = greedy(model, pad_sources(sources, model.config)).tolist()
    ends = [row.index(EOS) if EOS in row else None for row in out]
    assert {0, 2, None} <= set(ends)
    for src, row, end in zip(sources, out, ends):
        assert BOS not in row and PAD not in row[:end]
        if end is not None:
            assert all(t == PAD for t in row[end + 1:])  # nothing written after a row's EOS
        alone = greedy(model, pad_sources([src], model.config)).tolist()[0]  # what the row decodes to by itself
        assert row[:len(alone)] == alone and all(t == PAD for t in row[len(alone):])


@pytest.mark.parametrize("seed", range(4))
def test_beam_width_one_is_greedy(seed):
    model = tiny(peaked=True, seed=seed)
    src = pad_sources(SRC, model.config)
    greedy_ids = [strip_special(row, model.config) for row in greedy(model, src).tolist()]
    assert [hyps[0].tokens for hyps in beam_search(model, src, beam=1, alpha=0.0)] == greedy_ids


def sequence_log_probs(model: Seq2Seq, src: list[int], outputs: list[list[int]]) -> list[float]:
    """log P(out | src) of each output by teacher forcing (one uncached forward, padded outputs),
    with tokens scored as decoding scores them (`next_log_probs`)."""
    src_t = pad_sources([src] * len(outputs), model.config)
    tgt_in = make_batch([src] * len(outputs), [out[:-1] for out in outputs], model.config)[1]  # BOS + out[:-1]
    logp = next_log_probs(model(src_t, tgt_in)[0], model.config)  # (N, T, V)
    return [logp[i, torch.arange(len(out)), out].sum().item() for i, out in enumerate(outputs)]


def test_beam_search_as_wide_as_every_prefix_finds_the_exhaustive_best():
    assert length_penalty(1, 0.6) == 1.0 and length_penalty(7, 1.0) == 2.0  # GNMT: ((5 + |Y|) / 6)^alpha
    # 3 writable tokens + EOS, at most 4 written: 27 live prefixes x 4 candidates <= 128
    model = tiny(peaked=True, seed=0, tgt_vocab_size=6, max_tgt_len=4)
    outputs = [list(p) + [EOS] for n in range(4) for p in itertools.product([3, 4, 5], repeat=n)]
    outputs += [list(p) for p in itertools.product([3, 4, 5], repeat=4)]  # unended at max_len
    assert len(outputs) == 1 + 3 + 9 + 27 + 81
    src = pad_sources(SRC, model.config)
    log_probs = [sequence_log_probs(model, source, outputs) for source in SRC]
    for alpha in (0.0, 0.6):
        found = beam_search(model, src, beam=128, alpha=alpha, n_best=3)
        narrow = beam_search(model, src, beam=1, alpha=alpha)
        narrow_missed = 0
        for lp, hyps, greedy_hyp in zip(log_probs, found, narrow):
            scored = sorted(((lp_i / length_penalty(len(out), alpha), out) for lp_i, out in zip(lp, outputs)),
                            reverse=True)
            best = [[t for t in out if t != EOS] for _, out in scored[:3]]
            assert [h.tokens for h in hyps] == best
            assert [h.score for h in hyps] == pytest.approx([score for score, _ in scored[:3]], abs=1e-4)
            narrow_missed += greedy_hyp[0].tokens != best[0]
        assert narrow_missed > 0  # the best is not always the greedy choice: the search mattered


def test_translate_gives_each_source_what_decoding_it_alone_gives():
    model = tiny(peaked=True, seed=1)
    sources = SRC + [[4], [10, 9, 8, 7, 6, 5, 4, 3]]
    alone = [strip_special(greedy(model, pad_sources([s], model.config))[0].tolist(), model.config) for s in sources]
    assert translate(model, sources, batch_size=2) == alone  # batching and padding change nothing
    alone_beam = [beam_search(model, pad_sources([s], model.config), beam=3)[0][0].tokens for s in sources]
    assert translate(model, sources, beam=3, batch_size=3) == alone_beam
    with pytest.raises(ValueError, match="does not sample"):
        translate(model, sources, beam=2, temperature=1.0)


def test_cross_attention_of_a_pair_lines_up_with_target_and_eos():
    model = tiny(peaked=True)
    att = cross_attention(model, [3, 4, 5, 6], [7, 8])
    assert att.shape == (2, 2, 3, 4)  # (n_dec_layer, n_head, len(tgt) + EOS, len(src))
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 2, 3))
    _, cache = model.run_with_cache(*make_batch([[3, 4, 5, 6]], [[7, 8]], model.config)[:2], is_pattern)
    torch.testing.assert_close(att[1], cache["decoder.h.1.cross_attn.hook_pattern"][0])


def test_cross_attention_of_many_pairs_at_once_is_each_pairs_own():
    model = tiny(peaked=True)
    sources, targets = [[3, 4, 5, 6], [8], [5, 3, 7]], [[7, 8], [3, 4, 5, 6], []]
    together = cross_attentions(model, sources, targets)  # padded on both sides in one pass
    assert [w.shape for w in together] == [(2, 2, len(t) + 1, len(s)) for s, t in zip(sources, targets)]
    for w, s, t in zip(together, sources, targets):
        torch.testing.assert_close(w, cross_attention(model, s, t), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("shared", [False, True])
def test_save_and_load_give_the_same_model(tmp_path, shared):
    model = tiny(peaked=True, shared_embeddings=shared, src_vocab_size=9, pos_encoding="learned")
    batch = make_batch([[3, 4, 5], [8]], TGT[1:], model.config)
    path = save_seq2seq(model, tmp_path / "ckpt", {"tokenizer": {"kind": "char"}})
    loaded, artifacts = load_seq2seq(path)
    assert loaded.config == model.config and artifacts["tokenizer"] == {"kind": "char"}
    assert (loaded.src_embed.wte.weight is loaded.tgt_embed.wte.weight) == shared
    assert loaded.lm_head.weight is loaded.tgt_embed.wte.weight
    torch.testing.assert_close(loaded(*batch)[0], model(*batch)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="differs from model.config"):
        save_seq2seq(model, tmp_path / "other", {"config": {"model": {"n_layer": 1}}})
    gpt_like = save_checkpoint(tmp_path / "gpt", model, {"config": {"model": {"vocab_size": 9}}})
    with pytest.raises(ValueError, match="no encoder–decoder 'model' section"):
        load_seq2seq(gpt_like)


# ------------------------------------------------------------------- training
def test_trainer_teaches_it_to_reverse_sequences(tmp_path):
    """The Annotated Transformer's sanity check before real data: a tiny copy-like task (reverse the
    source) learned by the workbench's own Trainer, whose checkpoints load with load_seq2seq.

    Learned positions: reversing pairs target position t with source position len-1-t, a sum of
    positions, which sinusoids (whose dot products depend on differences) make slow to learn; at this
    size they copy in a few hundred steps but reverse only partly."""
    config = Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=10, shared_embeddings=True, n_layer=1, n_dec_layer=1,
                           n_head=2, n_embd=32, max_src_len=6, max_tgt_len=7, dropout=0.0, pos_encoding="learned")
    torch.manual_seed(0)
    model = Seq2Seq(config)

    def pairs(generator, n):
        lengths = torch.randint(2, 6, (n,), generator=generator).tolist()
        sources = [torch.randint(3, 10, (length,), generator=generator).tolist() for length in lengths]
        return sources, [s[::-1] for s in sources]

    val = pairs(torch.Generator().manual_seed(99), 64)
    evaluate = loss_evaluator(*val, config, batch_size=24)  # uneven batches: the mean is still per token
    before = evaluate(model.eval())["val_loss"]
    torch.testing.assert_close(before, model(*make_batch(*val, config))[1].item())
    train = TrainConfig(batch_size=32, max_iters=120, lr=1e-2, min_lr=1e-3, warmup_iters=5, eval_interval=60,
                        weight_decay=0.0, device="cpu", seed=0)
    trainer = Trainer(model, train, lambda g: make_batch(*pairs(g, 32), config), evaluate, run_dir=tmp_path,
                      artifacts={"config": {"model": asdict(config)}}, progress=False)
    trainer.fit()
    after = trainer.best
    assert before > 2.0 and after < 0.5 * before, (before, after)
    loaded, _ = load_seq2seq(latest_checkpoint(tmp_path))
    with autocast_context(torch.device("cpu"), trainer.compute_dtype):  # as the Trainer evaluated
        assert evaluate(loaded)["val_loss"] == pytest.approx(trainer.history.evals()["val_loss"].iloc[-1], abs=1e-5)
