"""Generation quality, checked against references: hand-counted distinct-n and repetition,
sacrebleu for BLEU/chrF, continuations cut at line starts and word ends and to the reference's length, and
tables that repeat with the same seed."""

import pandas as pd
import pytest
import sacrebleu
from helpers import TEXT, tiny_gpt

from workbench import generation_eval as ge

pytestmark = pytest.mark.usefixtures("one_thread")


def test_distinct_n_and_repetition_on_hand_examples():
    words = "the cat the cat the dog".split()
    assert ge.distinct_n(words, 1) == pytest.approx(3 / 6)  # the, cat, dog
    assert ge.distinct_n(words, 2) == pytest.approx(3 / 5)  # the-cat, cat-the, the-dog
    assert ge.repetition_rate(words, 4) == 0.0  # its three 4-grams are all different
    assert ge.repetition_rate("a b c d a b c d".split(), 4) == pytest.approx(1 - 4 / 5)  # abcd seen twice
    assert ge.repetition_rate("a a a a a a".split(), 4) == pytest.approx(2 / 3)
    assert ge.distinct_n(["a"], 2) == 0.0 and ge.repetition_rate(["a", "b"], 4) == 0.0
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        ge.distinct_n(words, 0)  # it counted empty n-grams: 0.333


def test_generation_table_is_reproducible_and_measures_each_sample(char_tok):
    model = tiny_gpt(char_tok.vocab_size)
    strategies = {"greedy": {"temperature": 0.0}, "top-k": {"temperature": 1.0, "top_k": 5}}
    df = ge.generation_table(model, char_tok, ["ROMEO:\n", "JULIET:\n"], strategies, max_new_tokens=12, seed=3)
    assert len(df) == 4 and df["strategy"].tolist() == ["greedy", "greedy", "top-k", "top-k"]
    assert (df["new_tokens"] == 12).all() and (df["characters"] == 12).all()  # one char per token
    again = ge.generation_table(model, char_tok, ["ROMEO:\n", "JULIET:\n"], strategies, max_new_tokens=12, seed=3)
    assert df["text"].tolist() == again["text"].tolist()
    row = df.iloc[2]
    words = row["text"].split()
    assert row["distinct_1"] == ge.distinct_n(words, 1) and row["repetition_4"] == ge.repetition_rate(words, 4)
    with pytest.raises(ValueError, match="unknown settings"):
        ge.generation_table(model, char_tok, ["R"], {"bad": {"temp": 1.0}})


def test_show_whitespace_writes_line_breaks_as_marks_and_a_long_run_as_its_count():
    """A barely trained model's 60 newlines were a table row 60 lines tall and empty."""
    assert ge.show_whitespace("\n" * 60) == "↵×60 "
    assert ge.show_whitespace("ROMEO:\nI will\n\n\n\n\tgo\r\n") == "ROMEO:↵ I will↵×4 ⇥ go␍ ↵ "
    assert ge.show_whitespace("a\n\nb c") == "a↵↵ b c"  # short runs mark each break; spaces stay
    assert "\n" not in ge.show_whitespace("x\n" * 30)
    with pytest.raises(TypeError, match=r"samples\['text'\].map\(show_whitespace\)"):
        ge.show_whitespace(None)


def test_continuation_task_cuts_passages_at_line_starts_and_word_ends():
    docs = {"one": TEXT, "two": TEXT.upper()}
    task = ge.continuation_task(docs, n=4, prompt_chars=30, continuation_chars=20, seed=1)
    assert len(task) == 4
    for _, row in task.iterrows():
        text, prompt = docs[row["document"]], row["prompt"]
        assert text[row["start"] : row["start"] + len(prompt) + 20] == prompt + row["reference"]
        assert row["start"] == 0 or text[row["start"] - 1] == "\n"
        assert 0 < len(prompt) <= 30 and len(row["reference"]) == 20
        # the prompt ends on a whole word; the continuation starts with the whitespace after it
        assert not prompt[-1].isspace() and row["reference"][0].isspace()
    assert task.equals(ge.continuation_task(docs, n=4, prompt_chars=30, continuation_chars=20, seed=1))
    with pytest.raises(ValueError, match="lower n"):
        ge.continuation_task(TEXT, n=50, prompt_chars=30, continuation_chars=20)


def test_cut_at_whitespace_ends_a_prompt_before_the_last_whitespace_run():
    text = "To be, or  not to be"
    assert ge.cut_at_whitespace(text, 0, 12) == 9  # "To be, or" | "  not ..." (the whole run of spaces)
    assert ge.cut_at_whitespace(text, 0, 9) == 9  # the span already ends before a space
    assert ge.cut_at_whitespace(text, 0, 8) == 6  # "To be," | " or": never inside "or"
    assert ge.cut_at_whitespace("Honorificabilitudinitatibus", 0, 10) == 10  # no whitespace: cut in the word
    line = "I know you all, and will awhile uphold the unyoked humour of your idleness"
    (row,) = ge.continuation_task(line, n=1, prompt_chars=33, continuation_chars=8).itertuples()
    assert (row.prompt, row.reference) == ("I know you all, and will awhile", " uphold ")  # not "...awhile u"


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_continuations_have_the_references_length(kind, char_tok, bpe_tok):
    tok = char_tok if kind == "char" else bpe_tok
    model = tiny_gpt(tok.vocab_size)
    task = ge.continuation_task(TEXT, n=2, prompt_chars=30, continuation_chars=25, seed=0)
    samples = ge.continuation_samples(model, tok, task, {"greedy": {"temperature": 0.0}})
    assert (samples["hypothesis"].str.len() == 25).all()
    scores = ge.score_continuations(samples)
    assert scores["strategy"].tolist() == ["greedy"] and 0 <= scores.loc[0, "chrf"] <= 100


def test_bleu_and_chrf_are_sacrebleus():
    hyps = ["the cat sat on the mat\nand slept", "O Romeo, wherefore art thou", "a completely different line"]
    refs = ["the cat sat upon the mat\nand slept", "O Romeo, Romeo, wherefore art thou Romeo?", "nothing alike at all"]
    s = ge.bleu_chrf(hyps, refs)
    assert s["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert s["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert 0 < s["bleu"] < 100 and 0 < s["chrf"] < 100
    perfect = ge.bleu_chrf(refs, refs)
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    none = ge.bleu_chrf(["xyz qqq vvv www"], ["abc def ghi jkl"])
    assert none["bleu"] == 0 and none["chrf"] == 0
    with pytest.raises(ValueError, match="no hypotheses to score"):  # not an IndexError inside sacrebleu
        ge.bleu_chrf([], [])
    samples = pd.DataFrame({"strategy": ["g", "g", "s"], "hypothesis": hyps, "reference": refs,
                            "new_tokens": [1, 2, 3]})
    scores = ge.score_continuations(samples)
    assert scores["bleu"].tolist() == pytest.approx([ge.bleu_chrf(hyps[:2], refs[:2])["bleu"],
                                                     ge.bleu_chrf(hyps[2:], refs[2:])["bleu"]])
