"""Generation quality: decoding strategies side by side, and continuations of held-out text scored
against what the text really says next.

- `generation_table`: greedy, temperature, top-k and top-p decoding (`DEFAULT_STRATEGIES`) of
  the same prompts, with distinct-n and repetition of each sample; `show_whitespace` writes a
  sample's line breaks as marks for a table cell.
- `continuation_task`, `continuation_samples`, `score_continuations` (together
  `continuation_scores`): passages of held-out text cut (at a word's end) into a prompt and its
  true continuation, the model's continuation of each prompt, and BLEU and chrF (computed by
  `sacrebleu`) of the continuations against the true ones.

Part of the evaluation card (`workbench.evaluate.evaluate_checkpoint`).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .data import Document
from .model import check_vocabulary
from .tokenizer import VISIBLE_MARKS, Tokenizer

# Named decoding settings, passed to GPT.generate. temperature 0 is greedy.
DEFAULT_STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0},
    "temperature 0.8": {"temperature": 0.8},
    "top-k 40": {"temperature": 1.0, "top_k": 40},
    "top-p 0.9": {"temperature": 1.0, "top_p": 0.9},
}
_SETTINGS = ("temperature", "top_k", "top_p")


def _check_strategies(strategies: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    strategies = dict(DEFAULT_STRATEGIES if strategies is None else strategies)
    if not strategies:
        raise ValueError("strategies is empty; pass e.g. {'greedy': {'temperature': 0.0}}")
    for name, settings in strategies.items():
        unknown = set(settings) - set(_SETTINGS)
        if unknown:
            raise ValueError(f"strategy {name!r} has unknown settings {sorted(unknown)}; "
                             f"use only {', '.join(_SETTINGS)}")
    return {name: dict(settings) for name, settings in strategies.items()}


def distinct_n(tokens: Sequence, n: int) -> float:
    """Distinct-n (Li et al., 2016): unique n-grams / all n-grams of a sequence; 0.0 when it has none."""
    if isinstance(n, bool) or not (isinstance(n, numbers.Integral) and n >= 1):
        raise ValueError(f"n must be an integer >= 1 (1: words, 2: word pairs), got {n!r}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(tokens: Sequence, n: int = 4) -> float:
    """Share of n-grams that repeat an earlier n-gram of the same sequence (= 1 - distinct-n);
    0.0 when it has no n-grams. 0 means no n-gram occurs twice; a text stuck in a loop tends to 1."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def _prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("a prompt is empty; give every prompt at least one character (e.g. '\\n')")
    return ids


def generate_continuation(model: nn.Module, tokenizer: Tokenizer, prompt: str, settings: Mapping[str, Any],
                          max_new_tokens: int | None = None, min_chars: int | None = None,
                          seed: int = 0) -> tuple[str, int]:
    """Continue a prompt with one decoding setting; return (continuation text, new tokens).

    Either `max_new_tokens` tokens, or (with `min_chars`) as many as it takes for the
    continuation to reach min_chars characters, generated in rounds sized from the prompt's
    characters per token. The continuation is decode(prompt + new ids) minus the prompt, so a
    multi-byte character split across tokens decodes whole.
    """
    if (max_new_tokens is None) == (min_chars is None):
        raise ValueError("pass exactly one of max_new_tokens and min_chars")
    check_vocabulary(model, tokenizer)
    ids = _prompt_ids(tokenizer, prompt)
    idx = torch.tensor([ids], dtype=torch.long, device=next(model.parameters()).device)
    if min_chars is None:
        out = model.generate(idx, max_new_tokens, seed=seed, **settings)
        return tokenizer.decode(out[0].tolist())[len(prompt):], int(max_new_tokens)
    chars_per_token = max(len(prompt) / len(ids), 1.0)
    text = ""
    for rounds in range(min_chars):  # bounded: a round of >= 3 tokens adds at least one character
        k = math.ceil((min_chars - len(text)) / chars_per_token * 1.1) + 2  # ~10% spare; loop if short
        idx = model.generate(idx, k, seed=seed + 1000 * rounds, **settings)
        text = tokenizer.decode(idx[0].tolist())[len(prompt):]
        if len(text) >= min_chars:
            break
    return text, int(idx.size(1) - len(ids))


_WHITESPACE_RUN = re.compile(r"([\n\r\t])\1*")  # a run of one of the characters VISIBLE_MARKS marks


def show_whitespace(text: str) -> str:
    """A continuation as a table cell shows it: each newline, carriage return and tab as the mark
    `tokenizer.tokens()` gives it ("↵", "␍", "⇥") and a space (where the line may wrap), a run of
    more than three as one mark and its count ("↵×60 "). A barely trained model can write dozens of
    newlines, which a cell showing its line breaks draws as a tall empty row. For display only: count
    characters and words on the text itself (`generation_table` does).
    """
    if not isinstance(text, str):
        raise TypeError(f"text is {type(text).__name__}, not a string; pass one continuation, e.g. "
                        "samples['text'].map(show_whitespace)")

    def mark(run: re.Match) -> str:
        n, sign = len(run.group()), run.group(1).translate(VISIBLE_MARKS)
        return (f"{sign}×{n}" if n > 3 else sign * n) + " "

    return _WHITESPACE_RUN.sub(mark, text)


def generation_table(model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str],
                     strategies: Mapping[str, Mapping[str, Any]] | None = None, max_new_tokens: int = 100,
                     seed: int = 0) -> pd.DataFrame:
    """Sample every prompt with every decoding strategy; per-sample diversity statistics.

    Diversity is measured on whitespace-separated words of the generated text (not model
    tokens), so char and BPE models compare: distinct-1 and distinct-2 (`distinct_n`), and
    repetition = share of word 4-grams that repeat an earlier one (`repetition_rate`).
    Sample i of every strategy uses seed + i, so tables are reproducible.

    Args:
        prompts: prompt strings.
        strategies: {name: GPT.generate settings}; default `DEFAULT_STRATEGIES` (greedy,
            temperature 0.8, top-k 40, top-p 0.9).
        max_new_tokens: tokens generated per sample.
        seed: base seed.
    Returns:
        one row per (strategy, prompt): strategy, prompt_id, prompt, text (the continuation),
        new_tokens, characters, words, distinct_1, distinct_2, repetition_4.
    """
    strategies = _check_strategies(strategies)
    rows = []
    for name, settings in strategies.items():
        for i, prompt in enumerate(prompts):
            text, n_new = generate_continuation(model, tokenizer, prompt, settings, max_new_tokens=max_new_tokens,
                                                seed=seed + i)
            words = text.split()
            rows.append({"strategy": name, "prompt_id": i, "prompt": prompt, "text": text, "new_tokens": n_new,
                         "characters": len(text), "words": len(words), "distinct_1": distinct_n(words, 1),
                         "distinct_2": distinct_n(words, 2), "repetition_4": repetition_rate(words, 4)})
    return pd.DataFrame(rows)


def continuation_task(source: str | Sequence[Document] | Mapping[str, str], n: int = 20, prompt_chars: int = 200,
                      continuation_chars: int = 100, seed: int = 0) -> pd.DataFrame:
    """Passages of held-out text cut into a prompt and its true continuation.

    Passages start at the beginning of a non-empty line (drawn without replacement with a
    seeded RNG, in proportion to each document's lines), so a prompt opens on a speaker name or
    a verse line rather than mid-word. A prompt also ends at a word's end: it is cut before the
    last run of whitespace within its first `prompt_chars + 1` characters (`cut_at_whitespace`),
    and the reference continuation starts with that whitespace, so the model continues after a
    whole word instead of finishing one whose start it was given.

    Args:
        source: a text, `Document`s (e.g. the held-out plays) or {name: text}.
        n: number of passages.
        prompt_chars: the most characters of a prompt (exactly this many where the passage has
            no whitespace to cut at).
        continuation_chars: characters of the reference continuation.
        seed: RNG seed.
    Returns:
        n rows sorted by document and position: document, start, prompt, reference
        (text[start : start + len(prompt) + continuation_chars] == prompt + reference).
    """
    if prompt_chars < 1 or continuation_chars < 1:
        raise ValueError(f"prompt_chars and continuation_chars must be >= 1, got {prompt_chars}, {continuation_chars}")
    if isinstance(source, str):
        items = [("text", source)]
    elif isinstance(source, Mapping):
        items = list(source.items())
    else:
        items = [(d.title, d.text) for d in source]
    need = prompt_chars + continuation_chars
    candidates = []  # (document index, start)
    for k, (_, text) in enumerate(items):
        starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        candidates += [(k, s) for s in starts if s + need <= len(text) and text[s] != "\n"]
    if len(candidates) < n:
        raise ValueError(f"the text has only {len(candidates)} line starts with {need} characters after them, "
                         f"fewer than n={n}; lower n (evaluate --prompts), prompt_chars or continuation_chars, or "
                         "pass more text")
    pick = sorted(np.random.default_rng(seed).choice(len(candidates), size=n, replace=False).tolist())
    rows = []
    for c in pick:
        k, s = candidates[c]
        name, text = items[k]
        cut = cut_at_whitespace(text, s, s + prompt_chars)
        rows.append({"document": name, "start": s, "prompt": text[s:cut],
                     "reference": text[cut : cut + continuation_chars]})
    return pd.DataFrame(rows)


def cut_at_whitespace(text: str, start: int, end: int) -> int:
    """Where to end a prompt text[start:end] so that it ends at a word's end.

    Args:
        text: the whole text.
        start, end: the prompt's first character and the end of its longest allowed span (end > start).
    Returns:
        the start of the last run of whitespace in text[start + 1 : end + 1] (so text[start:cut]
        ends on a non-space and text[cut] is whitespace); `end` itself when that span has no
        whitespace (one long word: the prompt is then cut inside it).
    """
    assert 0 <= start < end <= len(text)
    cut = end
    while cut > start and not text[cut : cut + 1].isspace():
        cut -= 1
    if cut == start:  # no whitespace after the first character
        return end
    while cut - 1 > start and text[cut - 1].isspace():
        cut -= 1
    return cut


def continuation_samples(model: nn.Module, tokenizer: Tokenizer, task: pd.DataFrame,
                         strategies: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0) -> pd.DataFrame:
    """Continue each prompt of a `continuation_task` with each strategy, cut to the reference's length.

    Returns:
        one row per (strategy, passage): strategy, prompt_id, prompt, reference, hypothesis
        (the generated continuation, exactly len(reference) characters), new_tokens.
    """
    strategies = _check_strategies(strategies)
    rows = []
    for name, settings in strategies.items():
        for i, (prompt, reference) in enumerate(zip(task["prompt"], task["reference"])):
            text, n_new = generate_continuation(model, tokenizer, prompt, settings, min_chars=len(reference),
                                                seed=seed + i)
            rows.append({"strategy": name, "prompt_id": i, "prompt": prompt, "reference": reference,
                         "hypothesis": text[: len(reference)], "new_tokens": n_new})
    return pd.DataFrame(rows)


def bleu_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (0..100) of hypotheses against one reference each, by `sacrebleu`
    with its defaults (BLEU: 13a tokenization, exponential smoothing; chrF: character 6-grams, beta 2)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references; "
                         "pass one reference per hypothesis")
    if not hypotheses:
        raise ValueError("no hypotheses to score; pass at least one (hypothesis, reference) pair")
    hyps, refs = list(hypotheses), [list(references)]
    return {"bleu": float(sacrebleu.corpus_bleu(hyps, refs).score),
            "chrf": float(sacrebleu.corpus_chrf(hyps, refs).score)}


def score_continuations(samples: pd.DataFrame) -> pd.DataFrame:
    """BLEU and chrF per strategy of a `continuation_samples` table.

    Returns:
        one row per strategy (in order of appearance): strategy, bleu, chrf, samples,
        mean_new_tokens.
    """
    rows = []
    for name, g in samples.groupby("strategy", sort=False):
        rows.append({"strategy": name, **bleu_chrf(g["hypothesis"].tolist(), g["reference"].tolist()),
                     "samples": len(g), "mean_new_tokens": float(g["new_tokens"].mean())})
    return pd.DataFrame(rows)


def continuation_scores(model: nn.Module, tokenizer: Tokenizer, task: pd.DataFrame,
                        strategies: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0) -> pd.DataFrame:
    """BLEU and chrF of each decoding strategy on a continuation task (see `continuation_task`).

    The model continues the first part of each held-out passage; the continuation, cut to the
    true continuation's length in characters, is compared with it as a decoded string.

    Caveat: n-gram overlap with a single reference is a weak measure of a language model. It
    rewards reproducing the one continuation that happened (copying, memorised text) and
    penalises every other valid one, so scores are low even for good models; chrF (character
    n-grams) is less harsh than BLEU on short, re-tokenized text, and BLEU near 1 is noise.
    Neither greedy decoding nor sampling wins by design: greedy picks the likeliest tokens but
    small models then loop on a phrase, while sampling trades likelihood for variety (in 04's
    default profile sampling scored the higher chrF). Compare strategies and models on the same
    task and seed, not with published BLEU.

    Returns:
        one row per strategy: strategy, bleu, chrf, samples, mean_new_tokens.
    """
    return score_continuations(continuation_samples(model, tokenizer, task, strategies, seed))
