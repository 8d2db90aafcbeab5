"""GPT: the fused and explicit attention paths agree, the mask is causal, the KV cache is exact,
and the GPT-2 layout loads in Hugging Face transformers with the same logits."""

import pytest
import torch

from workbench.config import ModelConfig
from workbench.model import GPT, sample_next, sinusoidal_encoding

TINY = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{**TINY, **kw})).eval()


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_fused_and_explicit_paths_agree(pos, act):
    model = tiny(pos_encoding=pos, activation=act, bias=(pos != "rope"))
    idx = torch.randint(0, 50, (3, 16))
    fused, _ = model(idx)
    explicit, _, attn = model(idx, return_attention=True)
    assert (fused - explicit).abs().max().item() <= 1e-5
    assert len(attn) == 2 and attn[0].shape == (3, 2, 16, 16)
    for a in attn:
        assert torch.allclose(a.sum(-1), torch.ones(3, 2, 16), atol=1e-6)  # rows are distributions
        assert a.triu(diagonal=1).abs().max().item() == 0.0  # nothing attends to the future
        assert a[..., 0, 0].eq(1).all()  # the first token can only see itself


def test_capture_context_records_every_layer_and_cleans_up():
    model = tiny()
    idx = torch.randint(0, 50, (1, 8))
    with model.capture_attention() as attn:
        logits, _ = model(idx)
    assert len(attn) == 2 and attn[1].shape == (1, 2, 8, 8)
    assert model._attention_store is None
    _, _, direct = model(idx, return_attention=True)
    assert torch.equal(direct[1], attn[1])


def test_future_tokens_do_not_change_past_logits():
    model = tiny(pos_encoding="rope")
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 50
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


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
def test_greedy_generation_with_and_without_cache_is_identical(pos):
    model = tiny(pos_encoding=pos)
    prompt = torch.randint(0, 50, (2, 5))
    # 30 new tokens run past block_size=16, so the sliding window is exercised too
    cached = model.generate(prompt, 30, temperature=0, use_cache=True)
    plain = model.generate(prompt, 30, temperature=0, use_cache=False)
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
