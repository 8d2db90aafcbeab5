"""The generation engine: the fixed-shape decode step over the static cache gives the uncached
tokens, batched prompts of different lengths give what each prompt gives alone, a compiled step
equals the eager one and never recompiles, stop tokens and stop strings end each row where
expected, and streamed text equals the finished text."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from workbench.config import ModelConfig
from workbench.generate import Engine, decode_step, generate_text, stream_text
from workbench.model import GPT, KVCache

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)


def sharp(**kw) -> GPT:
    """A tiny GPT with large random weights: peaked logits, varied greedy text, no near-ties."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**TINY, **kw})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5)
    return model


def prompts_of(lengths, vocab=50, seed=0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def uncached(model, prompt: list[int], n: int) -> list[int]:
    return model.generate(torch.tensor([prompt]), n, temperature=0, use_cache=False)[0, len(prompt):].tolist()


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
def test_static_cache_greedy_tokens_equal_uncached_past_block_size(pos):
    model = sharp(pos_encoding=pos)
    prompt = prompts_of([5])[0]
    new = Engine(model).generate([prompt], 30, temperature=0)[0]  # 35 > block_size 16: the window slides
    assert new == uncached(model, prompt, 30)
    assert len(set(new)) >= 3  # varied text, so a position mix-up would show


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_batched_prompts_of_different_lengths_equal_each_prompt_alone(pos):
    model = sharp(pos_encoding=pos)
    prompts = prompts_of([3, 9, 14, 1])
    engine = Engine(model)
    batched = engine.generate(prompts, 12, temperature=0)  # 14 + 12 > 16: rows slide at different steps
    alone = [engine.generate([p], 12, temperature=0)[0] for p in prompts]
    assert batched == alone
    assert batched == [uncached(model, p, 12) for p in prompts]
    assert len({tuple(row) for row in batched}) == 4


def test_long_prompts_keep_their_last_block_size_tokens():
    model = sharp()
    long = prompts_of([40])[0]
    assert Engine(model).generate([long, long[-16:]], 5, temperature=0) == [uncached(model, long[-16:], 5)] * 2


def test_sampling_is_reproducible_and_equals_the_uncached_path():
    model = sharp(pos_encoding="rope")
    prompt = torch.tensor(prompts_of([4, 4]))
    settings = dict(temperature=1.0, top_k=10, seed=3)
    a = Engine(model).generate(prompt, 20, **settings)
    assert a == Engine(model).generate(prompt, 20, **settings)
    assert torch.tensor(a).equal(model.generate(prompt, 20, use_cache=False, **settings)[:, 4:])


def test_stop_tokens_end_each_row_and_the_stream_when_all_have_stopped():
    model = sharp()
    prompts = prompts_of([3, 6])
    engine = Engine(model)
    free = engine.generate(prompts, 12, temperature=0)
    stop = free[0][4]  # row 0 stops at index 4 (or earlier, where the token appeared before)
    expected = [row[: row.index(stop)] if stop in row else row for row in free]
    assert engine.generate(prompts, 12, temperature=0, stop_tokens=[stop]) == expected
    columns = list(engine.stream(prompts, 12, temperature=0, stop_tokens=[free[0][0], free[1][0]]))
    assert len(columns) == 1  # both rows stopped at their first token: nothing more is decoded


def test_stop_strings_end_each_row_where_expected_and_streaming_equals_generate(char_tok):
    model = sharp(vocab_size=char_tok.vocab_size, block_size=64)
    engine = Engine(model)
    prompts = ["to be", "the king and"]
    free = generate_text(engine, char_tok, prompts, 30, temperature=0)
    assert [len(t) for t in free] == [30, 30] and free[0] != free[1]
    stop = [free[0][10:13], free[1][4:6]]
    expected = [t[: min(i for i in (t.find(s) for s in stop) if i >= 0)] for t in free]
    assert len(expected[0]) <= 10 and len(expected[1]) <= 4
    assert generate_text(engine, char_tok, prompts, 30, stop=stop, temperature=0) == expected
    steps = list(stream_text(engine, char_tok, prompts, 30, stop=stop, temperature=0))
    assert ["".join(s[b] for s in steps) for b in range(2)] == expected
    assert len(steps) <= 13 + 1  # both rows end by the 13th token; one closing step
    # a stop string that never appears leaves the text whole, though its first character was held back
    steps = list(stream_text(engine, char_tok, prompts, 30, stop=[free[0][3] + "\x00"], temperature=0))
    assert ["".join(s[b] for s in steps) for b in range(2)] == free


def streamed(engine, tok, prompts, n, stop):
    """stream_text's steps and each row's pieces joined."""
    steps = list(stream_text(engine, tok, prompts, n, stop=stop, temperature=0))
    return steps, ["".join(s[b] for s in steps) for b in range(len(prompts))]


def test_a_stop_string_begun_in_the_prompt_ends_the_row_when_the_generated_text_completes_it(char_tok):
    """As Hugging Face's StopStringCriteria (the whole sequence): "Hello\n" + a first "\n" ends at "\n\n"."""
    engine = Engine(sharp(vocab_size=char_tok.vocab_size, block_size=64))
    free = generate_text(engine, char_tok, ["to be"], 30, temperature=0)[0]
    for stop, tokens in (("e" + free[0], 1), ("be" + free[:2], 2)):  # ends at the 1st (2nd) generated character
        assert free.find(stop) != 0
        assert generate_text(engine, char_tok, ["to be"], 30, stop=[stop], temperature=0) == [""]
        steps, joined = streamed(engine, char_tok, ["to be"], 30, [stop])
        assert joined == [""] and all(s == [""] for s in steps)  # none of it shown, not even held back then let go
        assert len(steps) == tokens + 1  # the row ended at the token that completed it; one closing step
    # a stop string wholly inside the prompt does not end the row at once (nor does the longer one's reach)
    for stop in (["be", "\x00\x00\x00"], ["to be"]):
        cut = min((i for i in (free.find(s) for s in stop) if i >= 0), default=len(free))
        assert generate_text(engine, char_tok, ["to be"], 30, stop=stop, temperature=0) == [free[:cut]]
        assert streamed(engine, char_tok, ["to be"], 30, stop)[1] == [free[:cut]]
        assert cut >= 3


def test_a_stop_string_begun_in_one_rows_prompt_ends_that_row_only(char_tok):
    engine = Engine(sharp(vocab_size=char_tok.vocab_size, block_size=64))
    prompts = ["to be", "the king and"]
    free = generate_text(engine, char_tok, prompts, 30, temperature=0)
    stop = "e" + free[0][:2]  # begins at row 0's last prompt character; row 1's prompt ends in "d"
    cut = free[1].find(stop)
    expected = ["", free[1][:cut] if cut >= 0 else free[1]]
    assert len(expected[1]) >= 5
    assert generate_text(engine, char_tok, prompts, 30, stop=[stop], temperature=0) == expected
    steps, joined = streamed(engine, char_tok, prompts, 30, [stop])
    assert joined == expected and all(s[0] == "" for s in steps)


@pytest.mark.slow  # one inductor compilation: ~30 s on a busy 2-core CPU
def test_compiled_decode_equals_eager_and_does_not_recompile_over_200_tokens():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model = sharp(pos_encoding="rope", block_size=256)
    prompts = prompts_of([5, 9])
    compiled = Engine(model, compile=True)
    compiled.generate(prompts, 3, temperature=0)  # warm-up: the one compilation
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    with torch._dynamo.config.patch(error_on_recompile=True):  # a recompilation would raise
        tokens = compiled.generate(prompts, 200, temperature=0)
    assert counters["stats"]["unique_graphs"] == graphs
    assert tokens == Engine(model, compile=False).generate(prompts, 200, temperature=0)
    # the compiled step attends with two matmuls that inductor fuses into its own kernel (CPU flash
    # attention took 28% of the baby GPT's compiled step); the eager step keeps SDPA's fused kernel
    cache, idx, positions = compiled.cache(2), torch.tensor([[1], [2]]), torch.tensor([[7], [3]])
    ops = {}
    for name, step in (("compiled", compiled.step), ("eager", decode_step)):
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            step(model, cache, idx, positions)
        ops[name] = {e.key for e in prof.key_averages()}
    assert not any("scaled_dot_product" in op for op in ops["compiled"])
    assert any("scaled_dot_product" in op for op in ops["eager"])


def test_kv_cache_reorder_keeps_the_chosen_rows_in_place():
    cache = KVCache.for_model(ModelConfig(**TINY), 3, "cpu", torch.float32)
    for buffer in (*cache.k, *cache.v):
        buffer.copy_(torch.arange(3.0)[:, None, None, None].expand_as(buffer))
    k = cache.k[1]
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.k[1] is k and [b[:, 0, 0, 0].tolist() for b in (*cache.k, *cache.v)] == [[2.0, 2.0, 0.0]] * 4


def test_a_cache_prefix_is_a_view_whose_writes_reach_the_cache():
    cache = KVCache.for_model(ModelConfig(**TINY), 2, "cpu", torch.float32)
    view = cache.prefix(5)
    assert view.k[0].shape == (2, 2, 5, 8) and cache.k[0].shape == (2, 2, 16, 8)
    k, v = view.write(1, torch.ones(2, 2, 1, 8), 2 * torch.ones(2, 2, 1, 8), torch.tensor([[4], [0]]))
    assert k.shape == (2, 2, 5, 8)
    assert cache.k[1][0, :, 4].eq(1).all() and cache.v[1][1, :, 0].eq(2).all() and cache.k[1].sum() == 2 * 2 * 8  # one slot per row


def test_streaming_runs_in_inference_mode_and_leaves_an_ordinary_cache():
    """The columns are inference tensors; the engine's cache is not, so a step under plain no_grad can
    still write to it (an inference tensor refuses in-place writes outside inference mode)."""
    model = sharp()
    engine = Engine(model, compile=False)
    columns = list(engine.stream([[1, 2, 3]], 4, temperature=0))
    assert all(column.is_inference() for column in columns)
    cache = engine.cache(1)
    assert not any(buffer.is_inference() for buffer in (*cache.k, *cache.v))
    with torch.no_grad():
        logits = decode_step(model, cache, columns[-1], torch.tensor([[7]]))
    assert logits.shape == (1, 50) and cache.k[0][0, :, 7].abs().sum() > 0


def test_bad_arguments_name_the_fix():
    engine = Engine(sharp())  # a vocabulary of 50
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([[1, 2], []], 3)
    with pytest.raises(ValueError, match="no prompts"):
        engine.generate([], 3)
    for n in (None, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
            engine.generate([[1]], n)
    for token in (50, -1):  # not an IndexError inside the embedding
        with pytest.raises(ValueError, match=f"token id {token} is outside the model's vocabulary \\(0..49\\)"):
            engine.generate([[1, token]], 3)
    with pytest.raises(ValueError, match=r"\(B, T\) token ids, got shape \(3,\); add a batch dimension"):
        engine.generate(torch.tensor([1, 2, 3]), 3)


def test_one_string_is_one_prompt_and_one_stop_string_and_another_models_tokenizer_is_refused(char_tok, bpe_tok):
    engine = Engine(sharp(vocab_size=char_tok.vocab_size, block_size=64))
    free = generate_text(engine, char_tok, ["to be"], 30, temperature=0)[0]
    stop = free[10:13]
    assert stop[0] in free[:10] or stop[1] in free[:10] or stop[2] in free[:10], "a stop read per character ends sooner"
    assert generate_text(engine, char_tok, "to be", 30, stop=stop, temperature=0) == [free[: free.find(stop)]]
    assert ["".join(s) for s in zip(*stream_text(engine, char_tok, "to be", 30, temperature=0))] == [free]
    with pytest.raises(ValueError, match=f"the tokenizer has {bpe_tok.vocab_size} tokens but the model's vocabulary "
                                         f"has {char_tok.vocab_size}: it is another model's"):
        generate_text(engine, bpe_tok, ["to be"], 3)


BAD_SAMPLING = [({"temperature": -1.0}, "temperature must be >= 0"), ({"temperature": float("nan")}, "temperature must be >= 0"),
                ({"temperature": None}, "temperature must be >= 0, a number"),
                ({"top_k": 0}, "top_k must be >= 1"), ({"top_k": -2}, "top_k must be >= 1"),
                ({"top_k": 2.5}, "top_k must be >= 1, a whole number"), ({"top_k": True}, "a whole number"),
                ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"), ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
                ({"top_p": "0.9"}, r"top_p must be in \(0, 1\], a number \(e.g. 0.9")]


@pytest.mark.parametrize("bad, message", BAD_SAMPLING)
def test_bad_sampling_settings_are_refused_with_the_fix(bad, message):
    """The engine and both paths of GPT.generate refuse them in one line, not deep inside torch.topk."""
    model = sharp()
    sampling = {"temperature": 1.0, **bad}
    with pytest.raises(ValueError, match=message):
        Engine(model).generate([[1]], 3, **sampling)
    for use_cache in (True, False):
        with pytest.raises(ValueError, match=message):
            model.generate(torch.tensor([[1]]), 3, use_cache=use_cache, **sampling)


def test_decode_step_attends_only_to_each_rows_filled_slots():
    """A hook on the pattern sees the whole cache (block_size keys); slots after a row's position weigh 0."""
    from workbench.generate import decode_step

    model = sharp()
    engine = Engine(model)
    engine.prefill(torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]]), torch.tensor([4, 2]))
    seen = []
    with model.hooks([("transformer.h.1.attn.hook_pattern", lambda p, hook: seen.append(p))]), torch.no_grad():
        logits = decode_step(model, engine.cache(2), torch.tensor([[7], [8]]), torch.tensor([[4], [2]]))
    (pattern,) = seen
    assert pattern.shape == (2, 2, 1, 16) and torch.allclose(pattern.sum(-1), torch.ones(2, 2, 1))
    assert pattern[0, :, 0, 5:].abs().max() == 0 and pattern[1, :, 0, 3:].abs().max() == 0
    assert (pattern[0, :, 0, :5] > 0).all() and (pattern[1, :, 0, :3] > 0).all()
    expected, _ = model(torch.tensor([[5, 6, 8]]))  # row 1 alone: its padding left no trace
    assert torch.allclose(logits[1], expected[0, -1], atol=1e-5)


def test_notebook_stream_sample_shows_the_text_as_it_grows_and_returns_generate_texts(char_tok, monkeypatch):
    """The notebook's live sample updates one display in place and ends with generate_text's continuation."""
    import html

    import IPython.display

    from workbench import notebook

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(obj.data)

    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id=None: shown.append(obj.data) or Handle())
    model = sharp(vocab_size=char_tok.vocab_size, block_size=64)
    text = notebook.stream_sample(model, char_tok, "to be", 30, refresh_s=0.0, temperature=0)
    assert text == generate_text(Engine(model), char_tok, ["to be"], 30, temperature=0)[0]
    assert len(shown) > 10  # redrawn as it grew, not once at the end
    assert shown[-1].endswith(f"<b>to be</b>{html.escape(text)}</pre>")
