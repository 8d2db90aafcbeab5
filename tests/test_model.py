"""GPT: the fused and explicit attention paths agree, the mask is causal, the named taps see and
replace what flows through them and leave no trace, the KV cache is exact, and the GPT-2 layout
loads in Hugging Face transformers with the same logits."""

import pytest
import torch
from torch.nn import functional as F

from helpers import CountLinear
from workbench.config import ModelConfig
from workbench.model import GPT, apply_rope, attend, rope_tables, sample_next, sinusoidal_encoding

TINY = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{**TINY, **kw})).eval()


def is_pattern(name: str) -> bool:
    return name.endswith("attn.hook_pattern")


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_fused_and_explicit_paths_agree(pos, act):
    model = tiny(pos_encoding=pos, activation=act, bias=(pos != "rope"))
    idx = torch.randint(0, 50, (3, 16))
    fused, _ = model(idx)
    explicit, cache = model.run_with_cache(idx, is_pattern)  # hooking the pattern runs the explicit path
    assert (fused - explicit).abs().max().item() <= 1e-5
    assert list(cache) == ["transformer.h.0.attn.hook_pattern", "transformer.h.1.attn.hook_pattern"]
    for a in cache.values():
        assert a.shape == (3, 2, 16, 16)
        assert torch.allclose(a.sum(-1), torch.ones(3, 2, 16), atol=1e-6)  # rows are distributions
        assert a.triu(diagonal=1).abs().max().item() == 0.0  # nothing attends to the future
        assert a[..., 0, 0].eq(1).all()  # the first token can only see itself


def test_explicit_path_runs_only_while_a_pattern_is_hooked_and_taps_leave_logits_unchanged(monkeypatch):
    model = tiny()
    idx = torch.randint(0, 50, (2, 12))
    sdpa, calls = F.scaled_dot_product_attention, []
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    plain, _ = model(idx)
    assert len(calls) == 2  # fused in both layers
    watched, cache = model.run_with_cache(idx, lambda name: not is_pattern(name))
    assert len(cache) == 2 * 6 + 1 and len(calls) == 4  # every other tap: still fused, bit for bit
    assert torch.equal(watched, plain)
    model.run_with_cache(idx, ["transformer.h.1.attn.hook_pattern"])
    assert len(calls) == 5  # only layer 0 stayed fused


def test_hooks_are_removed_even_when_the_body_raises():
    model = tiny()
    idx = torch.randint(0, 50, (2, 8))
    before, _ = model(idx)
    seen = []
    zero_z = ("transformer.h.0.attn.hook_z", lambda z, hook: torch.zeros_like(z))
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks([zero_z, ("hook_ln_f", lambda x, hook: seen.append(hook.name))]):
            inside, _ = model(idx)
            raise RuntimeError("boom")
    assert seen == ["hook_ln_f"] and not torch.allclose(inside, before)  # they were active inside
    assert not any(point.hooked for point in model.hook_points().values())
    assert torch.equal(model(idx)[0], before)
    with pytest.raises(ValueError, match=r"unknown hook name 'transformer.h.0.attn.hook_q'.*hook_resid_pre"):
        with model.hooks([zero_z, ("transformer.h.0.attn.hook_q", print)]):
            pass
    assert not any(point.hooked for point in model.hook_points().values())  # a bad name adds no hook


def test_an_unhooked_tap_is_a_bare_identity_and_hooks_on_every_module_still_reach_the_taps():
    model = tiny()
    x = torch.randn(2, 3, 16)
    assert model.transformer.h[0].hook_resid_pre(x) is x
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: seen.append(type(m).__name__))
    try:
        model(torch.randint(0, 50, (1, 4)))
    finally:
        handle.remove()
    assert seen.count("HookPoint") == 2 * 6 + 1  # six taps per block (the pattern only on its explicit path), ln_f
    grads = []  # a backward hook on a tap takes the module call too
    handle = model.hook_ln_f.register_full_backward_hook(lambda m, grad_in, grad_out: grads.append(grad_out[0].shape))
    try:
        model(torch.randint(0, 50, (1, 4)))[0].sum().backward()
    finally:
        handle.remove()
    assert grads == [(1, 4, 16)]


def test_generated_tokens_are_ordinary_tensors_a_training_step_can_use():
    model = tiny().train()
    out = model.generate(torch.zeros(1, 2, dtype=torch.long), 6, temperature=0)  # decoded in inference mode
    assert not out.is_inference() and model.training
    _, loss = model(out[:, :-1], out[:, 1:])
    loss.backward()
    assert model.lm_head.weight.grad is not None


def test_zeroing_a_head_in_hook_z_equals_zeroing_its_slice_of_the_c_proj_input():
    model = tiny(n_head=4)  # head size 4
    idx = torch.randint(0, 50, (2, 10))
    head, hs = 2, 4

    def ablate(z, hook):  # z: (B, T, nh, hs)
        z = z.clone()
        z[:, :, head] = 0
        return z

    with model.hooks([("transformer.h.1.attn.hook_z", ablate)]):
        hooked, _ = model(idx)

    def by_hand(module, args):  # c_proj's input: (B, T, C), heads side by side
        y = args[0].clone()
        y[..., head * hs:(head + 1) * hs] = 0
        return (y,)

    handle = model.transformer.h[1].attn.c_proj.register_forward_pre_hook(by_hand)
    try:
        manual, _ = model(idx)
    finally:
        handle.remove()
    assert torch.equal(hooked, manual)
    assert not torch.allclose(hooked, model(idx)[0])  # the head mattered


def test_a_replaced_pattern_is_what_the_values_are_mixed_with():
    model = tiny()
    idx = torch.randint(0, 50, (2, 10))
    attend_to_self = ("transformer.h.0.attn.hook_pattern", lambda p, hook: torch.eye(p.size(-1)).expand_as(p))
    with model.hooks([attend_to_self]):
        logits, cache = model.run_with_cache(idx, ["transformer.h.0.hook_resid_pre", "transformer.h.0.attn.hook_z"])
    block = model.transformer.h[0]
    v = block.attn.c_attn(block.ln_1(cache["transformer.h.0.hook_resid_pre"])).split(16, dim=2)[2]  # (B, T, C)
    assert torch.allclose(cache["transformer.h.0.attn.hook_z"], v.view(2, 10, 2, 8), atol=1e-6)  # z = I · v
    assert not torch.allclose(logits, model(idx)[0])


def test_run_with_cache_keeps_the_named_taps_with_their_shapes():
    model = tiny()
    idx = torch.randint(0, 50, (3, 10))
    logits, cache = model.run_with_cache(idx)
    assert list(cache) == list(model.hook_points())
    assert list(cache)[:7] == [f"transformer.h.0.{n}" for n in ("hook_resid_pre", "attn.hook_pattern", "attn.hook_z",
                                                                 "hook_attn_out", "hook_resid_mid", "hook_mlp_out",
                                                                 "hook_resid_post")]
    shapes = {"hook_pattern": (3, 2, 10, 10), "hook_z": (3, 10, 2, 8)}  # (B, nh, T, T), (B, T, nh, hs)
    for name, t in cache.items():
        assert t.shape == shapes.get(name.rsplit(".", 1)[-1], (3, 10, 16)), name  # the rest (B, T, C)
        assert not t.requires_grad  # detached
    h0, h1 = "transformer.h.0.", "transformer.h.1."
    assert torch.equal(cache[h0 + "hook_resid_mid"], cache[h0 + "hook_resid_pre"] + cache[h0 + "hook_attn_out"])
    assert torch.equal(cache[h0 + "hook_resid_post"], cache[h0 + "hook_resid_mid"] + cache[h0 + "hook_mlp_out"])
    assert torch.equal(cache[h1 + "hook_resid_pre"], cache[h0 + "hook_resid_post"])
    assert torch.equal(model.transformer.ln_f(cache[h1 + "hook_resid_post"]), cache["hook_ln_f"])
    assert torch.allclose(model.lm_head(cache["hook_ln_f"]), logits, atol=1e-6)
    assert list(model.run_with_cache(idx, ["hook_ln_f"])[1]) == ["hook_ln_f"]
    assert list(model.run_with_cache(idx, lambda n: n.endswith("hook_z"))[1]) == [h0 + "attn.hook_z", h1 + "attn.hook_z"]
    with pytest.raises(ValueError, match="hook_points"):
        model.run_with_cache(idx, ["hook_resid_pre"])


def test_future_tokens_do_not_change_past_logits():
    model = tiny(pos_encoding="rope")
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 50
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_rope_rotates_channel_pairs_and_scores_depend_on_the_offset_only():
    """apply_rope is RoPE in the rotate-half layout (channel i pairs with i + hs/2, as GPT-NeoX and
    Llama): x·cos + (-x2, x1)·sin; so the score of a query at position m and a key at n depends on m - n."""
    hs, n = 8, 12
    cos, signed_sin = rope_tables(n, hs)
    angles = torch.outer(torch.arange(n, dtype=torch.float32), 1.0 / 10000 ** (torch.arange(0, hs, 2) / hs))
    x = torch.randn(3, n, 2, hs)  # (B, T, heads, hs)
    x1, x2 = x[..., : hs // 2], x[..., hs // 2 :]
    c, s = angles.cos()[:, None], angles.sin()[:, None]  # (T, 1, hs/2)
    textbook = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    torch.testing.assert_close(apply_rope(x, cos[:, None], signed_sin[:, None]), textbook)
    q, k = torch.randn(hs), torch.randn(hs)
    score = lambda m, p: apply_rope(q, cos[m], signed_sin[m]) @ apply_rope(k, cos[p], signed_sin[p])
    torch.testing.assert_close(score(5, 2), score(9, 6))
    torch.testing.assert_close(score(3, 3), q @ k)  # no offset, no rotation of the score


def test_attention_under_cpu_autocast_runs_in_fp32():
    """CPU flash attention is slow in bf16, so under autocast `attend` computes it in fp32 from the
    bf16 inputs and hands back bf16, with gradients; the explicit path is autocast's own."""
    q, k, v = (torch.randn(2, 2, 6, 4, requires_grad=True) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True)
    assert y.dtype == torch.bfloat16
    ref = F.scaled_dot_product_attention(*(t.bfloat16().float() for t in (q, k, v)), is_causal=True)
    torch.testing.assert_close(y, ref.bfloat16(), rtol=0, atol=0)
    y.float().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, v))


def test_loss_matches_cross_entropy_and_starts_near_log_vocab():
    model = tiny()
    idx = torch.randint(0, 50, (4, 16))
    targets = torch.randint(0, 50, (4, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (4, 16, 50)
    ref = torch.nn.functional.cross_entropy(logits.view(-1, 50), targets.view(-1))
    assert torch.allclose(loss, ref)
    assert abs(loss.item() - torch.log(torch.tensor(50.0)).item()) < 0.3  # small init: near uniform


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("settings", [dict(temperature=0), dict(temperature=1.0, top_k=10, seed=3)],
                         ids=["greedy", "sampled"])
def test_generation_with_and_without_cache_is_identical(pos, settings):
    model = tiny(pos_encoding=pos)
    prompt = torch.randint(0, 50, (2, 5))
    # 30 new tokens run past block_size=16, so the sliding window is exercised too
    cached = model.generate(prompt, 30, use_cache=True, **settings)
    plain = model.generate(prompt, 30, use_cache=False, **settings)
    assert cached.shape == (2, 35)
    assert torch.equal(cached, plain)


def test_sampling_is_reproducible_with_a_seed_and_respects_top_k():
    model = tiny()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    a = model.generate(prompt, 20, temperature=1.0, top_k=5, seed=7)
    b = model.generate(prompt, 20, temperature=1.0, top_k=5, seed=7)
    assert torch.equal(a, b)
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]])
    picks = {sample_next(logits, 1.0, 2, None, torch.Generator().manual_seed(i)).item() for i in range(50)}
    assert picks == {1, 2}
    picks = {sample_next(logits, 1.0, None, 0.5, torch.Generator().manual_seed(i)).item() for i in range(50)}
    assert picks == {1}  # token 1 alone holds more than half the mass


def test_gpt2_initialisation_and_tied_weights():
    model = GPT(ModelConfig(vocab_size=100, block_size=32, n_layer=4, n_head=4, n_embd=128))
    assert model.lm_head.weight is model.transformer.wte.weight
    std = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert abs(std - 0.02) < 0.002
    proj = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(proj - 0.02 / (2 * 4) ** 0.5) < 0.001


def test_num_params_and_flops_per_token():
    cfg = ModelConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg)
    per_layer = 12 * 128 * 128 + 13 * 128  # qkv/proj/mlp matrices + their biases + 2 LayerNorms
    expected = 4 * per_layer + 65 * 128 + 64 * 128 + 2 * 128
    assert model.num_params() == expected
    assert model.flops_per_token() == 6 * (expected - 64 * 128) + 12 * 4 * 4 * 32 * 64


def test_sinusoidal_encoding_values():
    pe = sinusoidal_encoding(10, 8)
    assert pe[0, 0::2].abs().max() == 0 and torch.allclose(pe[0, 1::2], torch.ones(4))
    assert torch.isclose(pe[3, 2], torch.sin(torch.tensor(3 / 10000 ** (2 / 8))))


def test_bad_configs_name_the_fix():
    with pytest.raises(ValueError, match="not divisible by n_head"):
        ModelConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="pos_encoding"):
        ModelConfig(pos_encoding="alibi")
    with pytest.raises(ValueError, match="crop"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("bias", [True, False])
def test_export_hf_matches_transformers_gpt2(tmp_path, bias):
    transformers = pytest.importorskip("transformers")
    model = tiny(bias=bias)
    with torch.no_grad():  # make biases non-trivial so a transposition slip would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.export_hf(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 50, (2, 16))
    ours, _ = model(idx)
    theirs = hf(idx).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_export_hf_refuses_non_gpt2_layouts(tmp_path):
    with pytest.raises(ValueError, match="GPT-2's layout"):
        tiny(pos_encoding="rope").export_hf(tmp_path)


def test_streaming_yields_each_new_column_and_equals_generate():
    model = tiny(pos_encoding="rope")
    prompt = torch.randint(0, 50, (2, 5))
    stream = model.generate_stream(prompt, 20, temperature=1.0, top_k=10, seed=4)
    first = next(stream)  # decoded before the rest exist
    assert first.shape == (2, 1)
    columns = [first, *stream]
    assert len(columns) == 20
    assert torch.equal(torch.cat([prompt, *columns], dim=1), model.generate(prompt, 20, temperature=1.0, top_k=10, seed=4))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        next(model.generate_stream(prompt, 3, temperature=-1.0))


def test_attend_paths_agree_with_masks_and_offsets():
    """The fused and explicit paths of `attend` agree for a padding mask and for causal queries after cached keys."""
    from workbench.model import HookPoint, attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (4, 6, 6))
    pad = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]  # (B, 1, 1, T_k)
    tap = HookPoint()
    seen = []
    for kwargs in ({"mask": pad}, {"is_causal": True}, {"mask": pad, "is_causal": True}):
        fused = attend(q, k, v, **kwargs)
        handle = tap.register_forward_hook(lambda m, a, out: seen.append(out))
        explicit = attend(q, k, v, pattern=tap, **kwargs)
        handle.remove()
        torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    causal = seen[1]  # query i is position 2 + i of 6: it sees keys 0..2+i
    assert causal[..., 0, 3:].abs().max() == 0 and causal[..., 0, 2].min() > 0
    assert seen[0][1, :, :, 4:].abs().max() == 0  # padded keys get no weight
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(2, 3, 4))


@pytest.mark.parametrize("chunk_rows", [5, 1000])
def test_chunked_cross_entropy_matches_full_logits(chunk_rows):
    """Loss and gradients of the chunked loss equal the plain logits + cross-entropy (ignored targets too)."""
    from workbench.model import chunked_cross_entropy

    g = torch.Generator().manual_seed(0)
    h = torch.randn(23, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(37, 16, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 37, (23,), generator=g)
    targets[[3, 17]] = -1
    ref = F.cross_entropy(h @ w.t(), targets, ignore_index=-1)
    ref_grads = torch.autograd.grad(2.5 * ref, (h, w))
    loss = chunked_cross_entropy(h, w, targets, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(2.5 * loss, (h, w))
    torch.testing.assert_close(loss, ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_chunked_cross_entropy_is_exact_where_the_target_probability_underflows():
    """A target 200 nats below the rest has probability exp(-200), 0 in fp32: its loss is still 200 + log(V-1)."""
    from workbench.model import chunked_cross_entropy

    V = 6
    logits = torch.zeros(3, V)
    logits[0, 2] = -200.0  # row 0's target: far out of fp32's range of probabilities
    logits[1, 4] = 3.0
    h, w = logits.clone().requires_grad_(), torch.eye(V, requires_grad=True)  # h @ w.T = logits
    targets = torch.tensor([2, 4, 0])
    loss = chunked_cross_entropy(h, w, targets)
    ref = F.cross_entropy(logits, targets)
    assert ref.item() > 200 / 3
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, h)[0],
                               torch.autograd.grad(F.cross_entropy(h, targets), h)[0])


@pytest.mark.parametrize("chunked", [None, False], ids=["chunked", "full_logits"])
def test_training_forward_returns_no_logits_and_the_same_gradients(chunked):
    """In train mode the GPT returns no logits and the same loss and weight gradients as eval-mode logits + CE,
    with the chunked loss (a CPU's default) and with full logits (CUDA's)."""
    model = tiny().train()  # dropout is 0: train and eval compute the same function
    model.chunked_loss = chunked
    idx, targets = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    logits, loss = model(idx, targets)
    assert logits is None
    grads = torch.autograd.grad(loss, list(model.parameters()))
    model.eval()
    logits, ref = model(idx, targets)
    assert logits.shape == (3, 16, 50)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(loss, ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_split_qkv_gives_the_same_logits_and_gradients(pos):
    """q, k, v from three matmuls on c_attn's weight rows compute what one c_attn matmul computes,
    gradients included; the default is the one matmul."""
    idx, targets = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))
    results = {}
    for split in (None, True, False):  # None: as built
        model = tiny(pos_encoding=pos, bias=True).train()
        if split is not None:
            for block in model.transformer.h:
                block.attn.split_qkv = split
        with CountLinear() as count:
            _, loss = model(idx, targets)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        results[split] = loss, grads, count.calls
    n_layer = TINY["n_layer"]
    assert results[True][2] == 6 * n_layer and results[False][2] == results[None][2] == 4 * n_layer  # (the chunked loss calls no F.linear)
    for split in (True, None):
        torch.testing.assert_close(results[split][0], results[False][0])
        for got, want in zip(results[split][1], results[False][1]):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_split_qkv_keeps_hooks_and_adapters_on_c_attn():
    """A hooked or wrapped c_attn (LoRA) is called as a module even where q, k, v would be split."""
    model = tiny().train()
    idx = torch.randint(0, 50, (2, 8))
    seen = []
    attn = model.transformer.h[0].attn
    attn.split_qkv = True
    handle = attn.c_attn.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    model(idx, idx)
    handle.remove()
    assert seen == [(2, 8, 3 * TINY["n_embd"])]
    from peft import LoraConfig, inject_adapter_in_model

    lora = inject_adapter_in_model(LoraConfig(r=2, target_modules=["attn.c_attn"]), tiny().train())
    for module in lora.modules():
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight)  # a trained adapter (peft starts B at 0)
    with torch.no_grad():
        want = lora.eval()(idx)[0]
        for block in lora.transformer.h:
            block.attn.split_qkv = True
        got = lora(idx)[0]
    torch.testing.assert_close(got, want)
    lora.train()  # with gradients too (dropout is 0: the same function)
    torch.testing.assert_close(lora(idx, idx)[1], F.cross_entropy(want.flatten(0, 1), idx.flatten()))


@pytest.mark.parametrize("extra", [-3, 5])  # fewer tokens: read as other tokens; more: outside the embedding
def test_every_function_of_a_gpt_and_its_tokenizer_refuses_another_models_tokenizer(extra):
    from helpers import TEXT
    from workbench import capture, evaluate, generation_eval, interpret
    from workbench.tokenizer import CharTokenizer

    tokenizer = CharTokenizer.train(TEXT)
    model = tiny(vocab_size=tokenizer.vocab_size + extra)
    message = f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary has {model.config.vocab_size}"
    for call in (lambda: capture.gpt_attention(model, tokenizer, "the king"),
                 lambda: evaluate.lm_metrics(model, tokenizer, TEXT[:200]),
                 lambda: interpret.logit_lens_top_tokens(model, tokenizer, "the king"),
                 lambda: generation_eval.generation_table(model, tokenizer, ["the king"], max_new_tokens=2)):
        with pytest.raises(ValueError, match=message):
            call()
    assert capture.gpt_attention(tiny(vocab_size=tokenizer.vocab_size), tokenizer, "the king").attentions.shape[-1] == 8
