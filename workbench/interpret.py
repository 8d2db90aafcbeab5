"""Looking inside, causally: which heads matter, induction heads, and the logit lens.

The attention figures (`workbench.viz.attention`) show where each head looks; this module asks
what the model does with it, through the GPT's named taps (`GPT.hooks`, `GPT.run_with_cache`):

- head ablation: replace one head's output (`attn.hook_z`) by zeros or by its mean over held-out
  positions and measure how much the held-out loss rises (nats/token) — "is important" — beside
  the pattern statistics of `capture.head_summary` — "looks important";
- induction heads (Olsson et al. 2022, "In-context Learning and Induction Heads"): on random
  tokens repeated twice, a head that attends from a token in the second copy to the token that
  followed its first occurrence, and the loss on the second copy against the first, judged
  together against what uniform attention scores (`induction_summary`);
- the logit lens (nostalgebraist 2020): each layer's residual stream decoded through the final
  LayerNorm and `lm_head`, as if the model stopped there.

Functions take a GPT and token ids and return tensors or DataFrames; `workbench.viz.interpret`
draws them. Layers of the logit lens are counted in blocks applied: depth 0 is the embeddings,
depth n_layer the model's own output.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from .capture import head_summary
from .data import require_columns
from .model import GPT, check_vocabulary, eval_mode

ABLATIONS = ("zero", "mean")
STATISTICS = ("entropy", "prev_token", "first_token", "self_token")


# ---------------------------------------------------------------- held-out text
def heldout_windows(ids, block_size: int, n_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_windows` non-overlapping windows of held-out ids, evenly spread over the text.

    Args:
        ids: 1-D token ids (array, memmap, list or tensor), at least block_size + 1 of them.
        block_size: tokens of input per window.
        n_windows: how many windows (fewer if the text holds fewer).
    Returns:
        (x, y), each (n, block_size) int64: inputs and their next tokens.
    """
    ids = np.asarray(ids.numpy() if isinstance(ids, torch.Tensor) else ids)
    available = (len(ids) - 1) // block_size
    if available < 1 or n_windows < 1:
        raise ValueError(f"{len(ids)} ids make {available} windows of {block_size + 1}; "
                         f"pass a longer text or a smaller block_size (and n_windows >= 1)")
    starts = np.linspace(0, available - 1, min(n_windows, available)).round().astype(int) * block_size
    pos = starts[:, None] + np.arange(block_size)  # (n, T)
    return (torch.from_numpy(ids[pos].astype(np.int64)), torch.from_numpy(ids[pos + 1].astype(np.int64)))


def _loss(logits: torch.Tensor, y: torch.Tensor) -> float:
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()).item()


def head_name(layer: int, head: int) -> str:
    """A head's name "L{layer}H{head}", e.g. "L0H3" (a layer or head read back as a float prints as an int)."""
    return f"L{layer:.0f}H{head:.0f}"


# ---------------------------------------------------------------- head ablation
def head_means(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """Each head's output averaged over every position of x: (n_layer, n_head, head_size)."""
    names = [f"transformer.h.{l}.attn.hook_z" for l in range(model.config.n_layer)]
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names)
    return torch.stack([cache[n].mean(dim=(0, 1)) for n in names])  # (B, T, nh, hs) -> (nh, hs) per layer


def ablate_head(head: int, value: torch.Tensor | float = 0.0):
    """A hook for `attn.hook_z` (B, T, nh, hs) that replaces head `head`'s output by `value` ((hs,) or a number)."""
    def hook(z: torch.Tensor, point) -> torch.Tensor:
        z = z.clone()
        z[:, :, head] = value
        return z
    return hook


@torch.no_grad()
def head_ablation(model: GPT, x: torch.Tensor, y: torch.Tensor, kinds: Sequence[str] = ABLATIONS) -> pd.DataFrame:
    """The held-out loss with each head ablated in turn, against the intact model.

    Zero ablation removes the head's output; mean ablation replaces it by its average over the
    positions of x (what the head says "on average", so only its position-specific message is
    lost; the usual, gentler test).

    Args:
        model: a GPT (run in eval mode; its train/eval mode is restored after).
        x, y: (B, T) inputs and next tokens, e.g. from `heldout_windows`.
        kinds: any of "zero", "mean".
    Returns:
        one row per (layer, head): base_loss and, per kind, `{kind}_loss` and `{kind}_delta`
        (loss rise in nats/token over the intact model).
    """
    unknown = [k for k in kinds if k not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation {unknown[0]!r}; use kinds from {ABLATIONS}")
    if x.dim() != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both be (B, T) windows, got {tuple(x.shape)} and {tuple(y.shape)}; "
                         "pass heldout_windows' pair (x[None] for one window)")
    rows = []
    with eval_mode(model):
        base = _loss(model(x)[0], y)
        means = head_means(model, x) if "mean" in kinds else None
        for l in range(model.config.n_layer):
            for h in range(model.config.n_head):
                row = {"layer": l, "head": h, "base_loss": base}
                for kind in kinds:
                    value = 0.0 if kind == "zero" else means[l, h]
                    with model.hooks([(f"transformer.h.{l}.attn.hook_z", ablate_head(h, value))]):
                        loss = _loss(model(x)[0], y)
                    row[f"{kind}_loss"], row[f"{kind}_delta"] = loss, loss - base
                rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def pattern_statistics(model: GPT, x: torch.Tensor) -> pd.DataFrame:
    """`capture.head_summary`'s pattern statistics of every head, averaged over the windows of x.

    Args:
        model: a GPT; x: (B, T) token ids, e.g. the held-out windows the ablation used.
    Returns:
        one row per (layer, head): entropy, prev_token, first_token, self_token.
    """
    with eval_mode(model):  # the model's train/eval mode is restored after
        _, cache = model.run_with_cache(x, lambda n: n.endswith("hook_pattern"))
    A = torch.stack([cache[f"transformer.h.{l}.attn.hook_pattern"] for l in range(model.config.n_layer)], 1)
    per_window = [head_summary(a) for a in A]  # A: (B, n_layer, nh, T, T)
    return pd.concat(per_window).groupby(["layer", "head"], as_index=False).mean()


def rank_correlations(table: pd.DataFrame, effect: str = "mean_delta",
                      statistics: Sequence[str] = STATISTICS) -> pd.DataFrame:
    """Spearman rank correlation, over heads, between an ablation effect and each pattern statistic.

    Args:
        table: one row per head with `effect` and the statistics (`head_ablation` merged with
            `capture.head_summary` on layer and head).
    Returns:
        one row per statistic: spearman (NaN when a column is constant).
    """
    require_columns(table, (effect, *statistics), "merge head_ablation with viz.head_summary on layer, head")
    ranks = table[[effect, *statistics]].rank()
    return pd.DataFrame({"statistic": list(statistics),
                         "spearman": [ranks[effect].corr(ranks[s]) for s in statistics]})


NOISE_NATS = 1e-3  # an ablation effect below this (nats/token) is within what float rounding and tiny models move


def top_heads_report(table: pd.DataFrame, correlations: pd.DataFrame, n: int = 3,
                     effect: str = "mean_delta") -> str:
    """A few lines on the heads whose ablation costs most and the statistic that ranks heads best.

    Args:
        table: one row per head with layer, head, `effect`, zero_delta and the pattern statistics
            (`head_ablation` merged with `pattern_statistics`).
        correlations: `rank_correlations(table, effect)`.
        n: how many heads to list, costliest first.
    Returns:
        one line per head: its loss rise under mean and zero ablation and its rank among all heads
        by each pattern statistic (1 = highest); then the statistic whose Spearman correlation
        with `effect` is largest in absolute value.
    """
    statistics = [s for s in STATISTICS if s in correlations["statistic"].tolist()]
    require_columns(table, ("layer", "head", effect, "zero_delta", *statistics),
                    "pass head_ablation merged with pattern_statistics")
    if correlations["spearman"].isna().all():
        raise ValueError("every correlation is NaN (constant columns); pass rank_correlations of a table that varies")
    ranks = table[statistics].rank(ascending=False, method="min")  # 1 = the head with the highest value
    lines = [f"The {min(n, len(table))} heads whose ablation costs most (rank of {len(table)} heads by each "
             "statistic, 1 = highest):"]
    for i in table.nlargest(n, effect).index:
        row = table.loc[i]
        by = ", ".join(f"{s} {ranks.loc[i, s]:.0f}" for s in statistics)
        lines.append(f"  {head_name(row['layer'], row['head'])}: {row[effect]:+.4f} nats/token ({effect}), "
                     f"{row['zero_delta']:+.4f} (zero_delta); rank by {by}")
    r = correlations.set_index("statistic")["spearman"]
    best = r.abs().idxmax()
    how = ("most like their ablation effect" if r[best] > 0 else
           f"most against their ablation effect (the higher a head's {best}, the less its ablation costs)")
    lines.append(f"The statistic that ranks heads {how}: {best} (Spearman {r[best]:+.2f} over {len(table)} heads)")
    if (largest := table[effect].abs().max()) < NOISE_NATS:
        lines.append(f"No ablation costs more than {largest:.1e} nats/token: at that level the ranks are noise, "
                     "not evidence (a model trained longer shows real effects)")
    return "\n".join(lines)


# ---------------------------------------------------------------- induction heads
def repeated_tokens(vocab_size: int, length: int, batch: int, seed: int = 0) -> torch.Tensor:
    """Random token sequences repeated twice: (batch, 2 * length), row[i + length] == row[i]."""
    if length < 2 or vocab_size < 2:
        raise ValueError(f"need length >= 2 and vocab_size >= 2, got {length}, {vocab_size}")
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(0, vocab_size, (batch, length), generator=g)
    return torch.cat([first, first], dim=1)


@torch.no_grad()
def induction_scores(model: GPT, idx: torch.Tensor) -> pd.DataFrame:
    """Per head, the mean attention from each token of the second copy to the token after its first
    occurrence: query length + i looks at key i + 1 (for a sequence from `repeated_tokens`).

    Args:
        model: a GPT; idx: (B, 2L) repeated sequences, 2L <= block_size.
    Returns:
        one row per (layer, head): induction_score in [0, 1] (1: all weight on the induction target).
    """
    B, T2 = idx.shape
    L = T2 // 2
    if T2 % 2 or not torch.equal(idx[:, :L], idx[:, L:]):
        raise ValueError("idx must be sequences repeated twice; build them with repeated_tokens")
    with eval_mode(model):  # the model's train/eval mode is restored after
        _, cache = model.run_with_cache(idx, lambda n: n.endswith("hook_pattern"))
    rows = []
    for l in range(model.config.n_layer):
        score = pattern_induction_scores(cache[f"transformer.h.{l}.attn.hook_pattern"])  # (nh,)
        rows += [{"layer": l, "head": h, "induction_score": float(score[h])} for h in range(len(score))]
    return pd.DataFrame(rows)


def pattern_induction_scores(pattern: torch.Tensor) -> torch.Tensor:
    """The induction score of each head from its attention weights on sequences repeated twice.

    Args:
        pattern: (B, nh, 2L, 2L) attention weights, rows the queries (`attn.hook_pattern`).
    Returns:
        (nh,): the weight query L + i puts on key i + 1, averaged over i = 0..L-1 and the batch.
    """
    if pattern.dim() != 4 or pattern.size(-1) != pattern.size(-2) or pattern.size(-1) % 2:
        raise ValueError(f"pattern must be (B, nh, 2L, 2L), got {tuple(pattern.shape)}; pass attn.hook_pattern")
    L = pattern.size(-1) // 2
    # the diagonal offset L - 1 below the main one holds (L - 1 + j, j); j = 1..L are (L + i, i + 1)
    return pattern.diagonal(offset=-(L - 1), dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, 2))


def uniform_induction_score(length: int) -> float:
    """The induction score of a head that spreads its attention evenly over all it may see.

    Under the causal mask, query L + i sees L + i + 1 keys and gives each 1 / (L + i + 1), so the
    score is (1/L) * sum_{i=0}^{L-1} 1 / (L + i + 1) = (H_2L - H_L) / L, about ln 2 / L
    (H_n the n-th harmonic number).

    Args:
        length: L, the tokens in each copy of the repeated sequence.
    Returns:
        the score, e.g. 0.0228 for L = 30 (ln 2 / 30 = 0.0231).
    """
    if length < 1:
        raise ValueError(f"length must be >= 1 token per copy, got {length}")
    return sum(1.0 / (length + i + 1) for i in range(length)) / length


@torch.no_grad()
def copy_losses(model: GPT, idx: torch.Tensor) -> dict[str, float]:
    """Next-token loss (nats) on the first copy of repeated sequences and on the second.

    The first copy is random, so its loss stays near log(vocab_size) whatever the model knows;
    a model that copies in context predicts the second copy from the first.

    Returns:
        {"first_copy_loss": mean over targets 1..L-1, "second_copy_loss": over targets L+1..2L-1}
        (the token at L is the one target neither copy predicts from its own context).
    """
    L = idx.size(1) // 2
    with eval_mode(model):  # the model's train/eval mode is restored after
        logits = model(idx[:, :-1])[0]
    ce = F.cross_entropy(logits.transpose(1, 2).float(), idx[:, 1:], reduction="none")  # (B, 2L-1)
    return {"first_copy_loss": ce[:, : L - 1].mean().item(), "second_copy_loss": ce[:, L:].mean().item()}


def snapshot_steps(folder: str | Path) -> list[tuple[int, Path]]:
    """The weight snapshots a `pretrain.WeightSnapshots` callback kept: (step, directory), by step."""
    root = Path(folder)
    found = [(int(p.name.split("-")[1]), p) for p in root.glob("step-*") if (p / "model.safetensors").is_file()]
    return sorted(found)


def load_snapshot(model: GPT, path: str | Path) -> GPT:
    """`model` with the weights of the snapshot at `path` (same config), in eval mode."""
    from .checkpoint import load_checkpoint

    load_checkpoint(path).load_weights(model)
    return model.eval()


def induction_over_checkpoints(model: GPT, snapshots: Sequence[tuple[int, str | Path]],
                               idx: torch.Tensor) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Induction scores and copy losses of every snapshot of a training run.

    Args:
        model: a GPT of the snapshots' config; its weights are replaced by each snapshot's in turn
            (and left at the last one).
        snapshots: (step, directory) pairs, e.g. `snapshot_steps(...)`.
        idx: (B, 2L) repeated sequences.
    Returns:
        (scores: one row per (step, layer, head) with induction_score,
         by_step: one row per step with first_copy_loss, second_copy_loss, max_induction_score).
    """
    if not snapshots:
        raise ValueError("no snapshots given; train with pretrain.WeightSnapshots to keep weights at chosen steps")
    scores, by_step = [], []
    for step, path in snapshots:
        load_snapshot(model, path)
        s = induction_scores(model, idx).assign(step=step)
        scores.append(s)
        by_step.append({"step": step, **copy_losses(model, idx), "max_induction_score": s["induction_score"].max()})
    return pd.concat(scores, ignore_index=True), pd.DataFrame(by_step)


def first_step_above(scores: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """The heads whose induction score ever exceeds `threshold`, each with the first step it did."""
    above = scores[scores["induction_score"] > threshold].sort_values("step")
    return above.groupby(["layer", "head"], as_index=False).first()[["layer", "head", "step", "induction_score"]]


def induction_summary(scores: pd.DataFrame, by_step: pd.DataFrame, length: int, threshold: float = 0.5,
                      margin: float = 0.1) -> dict:
    """Did induction heads form during training? The evidence of `induction_over_checkpoints`, judged.

    Two signs must agree: a head whose induction score rises well above what uniform attention
    scores (`uniform_induction_score`), and a second copy predicted better than the first (which
    only copying from context can do).

    Args:
        scores, by_step: `induction_over_checkpoints`'s tables.
        length: L, the tokens per copy of the probe (sets the uniform level).
        threshold: the induction score a head must exceed to count (above the uniform level).
        margin: nats/token the second copy's loss must lie below the first copy's to count as
            predicted better.
    Returns:
        {uniform_score, threshold, heads_above (distinct heads above threshold at any snapshot),
         first_above ("L{l}H{h}@{step}" of the earliest, or None), best_head and best_score (at
         the last snapshot), peak_head, peak_step, peak_score (highest at any snapshot),
         copy_better_from (first step whose second copy beat the first by margin, or None),
         last_step, first_copy_loss, second_copy_loss (at the last snapshot),
         formed (both signs), verdict (a sentence saying all this)}.
    """
    fix = "pass induction_over_checkpoints' two tables"
    require_columns(scores, ("step", "layer", "head", "induction_score"), fix, name="scores")
    require_columns(by_step, ("step", "first_copy_loss", "second_copy_loss"), fix, name="by_step")
    if scores.empty or by_step.empty:
        raise ValueError(f"no rows in scores or by_step; {fix}")
    uniform = uniform_induction_score(length)
    if threshold <= uniform:
        raise ValueError(f"threshold {threshold} is not above the uniform level {uniform:.3f}; pass a larger one")
    above = first_step_above(scores, threshold).sort_values(["step", "layer", "head"])
    first = above.iloc[0] if len(above) else None
    peak = scores.loc[scores["induction_score"].idxmax()]
    last_step = scores["step"].max()
    best = scores.loc[scores.loc[scores["step"] == last_step, "induction_score"].idxmax()]
    steps = by_step.sort_values("step")
    better = steps[steps["second_copy_loss"] <= steps["first_copy_loss"] - margin]
    last = steps.iloc[-1]
    summary = {
        "uniform_score": uniform, "threshold": threshold, "heads_above": len(above),
        "first_above": f"{head_name(first['layer'], first['head'])}@{first['step']:.0f}" if first is not None else None,
        "best_head": head_name(best["layer"], best["head"]), "best_score": float(best["induction_score"]),
        "peak_head": head_name(peak["layer"], peak["head"]), "peak_step": int(peak["step"]),
        "peak_score": float(peak["induction_score"]),
        "copy_better_from": int(better["step"].iloc[0]) if len(better) else None,
        "last_step": int(last["step"]), "first_copy_loss": float(last["first_copy_loss"]),
        "second_copy_loss": float(last["second_copy_loss"]),
    }
    heads, copies = summary["heads_above"] > 0, summary["copy_better_from"] is not None
    summary["formed"] = heads and copies
    lead = {(True, True): "Induction heads formed", (False, False): "No induction circuit formed at this budget",
            (True, False): "An induction pattern formed without in-context copying",
            (False, True): "In-context copying without a strong induction head"}[heads, copies]
    head_text = (f"{len(above)} head(s) exceeded an induction score of {threshold:g}, the first "
                 f"{head_name(first['layer'], first['head'])} at step {first['step']:.0f}" if heads else
                 f"no head exceeded an induction score of {threshold:g} at any of {scores['step'].nunique()} snapshots")
    level = (f"uniform causal attention scores {uniform:.3f}; the highest score was {summary['peak_head']} at "
             f"step {summary['peak_step']}, {summary['peak_score']:.3f}, {summary['peak_score'] / uniform:.1f}x that")
    copy_text = (f"the second copy was predicted at least {margin:g} nats/token better than the first from step "
                 f"{summary['copy_better_from']}" if copies else
                 f"the second copy was never predicted at least {margin:g} nats/token better than the first")
    summary["verdict"] = (f"{lead}: {head_text} ({level}), {'and' if heads == copies else 'but'} {copy_text} "
                          f"(at step {summary['last_step']}: {summary['first_copy_loss']:.2f} nats/token on the "
                          f"first copy, {summary['second_copy_loss']:.2f} on the second).")
    return summary


class InductionProbe(NamedTuple):
    """What `induction_probe` returns (a tuple, so it unpacks into the five names).

    Attributes:
        scores, by_step: `induction_over_checkpoints`'s tables (per step and head; per step).
        summary: `induction_summary` of them (the verdict among its keys).
        final: the final model's induction_score per (layer, head), beside the given head table's
            mean_delta and prev_token.
        final_copy: `copy_losses` of the final model (first_copy_loss, second_copy_loss).
    """

    scores: pd.DataFrame
    by_step: pd.DataFrame
    summary: dict
    final: pd.DataFrame
    final_copy: dict[str, float]


def induction_probe(model: GPT, snapshots: Sequence[tuple[int, str | Path]], length: int, batch: int,
                    heads: pd.DataFrame) -> InductionProbe:
    """The induction-head probe on a model and the weight snapshots of its training, in one call.

    One probe (`repeated_tokens(vocab_size, length, batch, seed=0)`) goes through every snapshot
    (`induction_over_checkpoints`, on a fresh GPT of the model's config, so `model` keeps its
    weights), is judged (`induction_summary`), and through the final model.

    Args:
        model: the trained GPT; snapshots: (step, directory) pairs of its training.
        length: L, tokens per copy (2L <= block_size); batch: sequences in the probe.
        heads: one row per (layer, head) with mean_delta and prev_token (the ablation table).
    Returns:
        InductionProbe(scores, by_step, summary, final, final_copy).
    """
    require_columns(heads, ("layer", "head", "mean_delta", "prev_token"),
                    "pass head_ablation's table merged with pattern_statistics", name="heads")
    repeated = repeated_tokens(model.config.vocab_size, length, batch, seed=0)
    scores, by_step = induction_over_checkpoints(GPT(model.config), snapshots, repeated)
    summary = induction_summary(scores, by_step, length)
    final = induction_scores(model, repeated).merge(heads[["layer", "head", "mean_delta", "prev_token"]])
    return InductionProbe(scores, by_step, summary, final, copy_losses(model, repeated))


# ---------------------------------------------------------------- logit lens
def layer_labels(n_layer: int) -> list[str]:
    """Names of the logit lens's depths: "embed", then "block 0" .. "block {n_layer-1}"."""
    return ["embed"] + [f"block {l}" for l in range(n_layer)]


@torch.no_grad()
def logit_lens(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Logits read from the residual stream after each block: lm_head(ln_f(resid)).

    Args:
        model: a GPT; idx: (B, T) token ids.
    Returns:
        (n_layer + 1, B, T, vocab_size): depth 0 decodes the embeddings (`hook_resid_pre` of
        block 0), depth d the output of block d - 1 (`hook_resid_post`); depth n_layer equals
        the model's own logits.
    """
    n = model.config.n_layer
    names = ["transformer.h.0.hook_resid_pre"] + [f"transformer.h.{l}.hook_resid_post" for l in range(n)]
    with eval_mode(model):  # the model's train/eval mode is restored after
        _, cache = model.run_with_cache(idx, names)
        return torch.stack([model.lm_head(model.transformer.ln_f(cache[name])) for name in names])


@torch.no_grad()
def logit_lens_metrics(model: GPT, x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """Next-token loss and accuracy of the logit lens at every depth, on held-out windows.

    Returns:
        one row per depth: depth, layer (label), loss (nats/token), accuracy (top-1 == next token),
        top_is_input (the share of positions whose top prediction is the input token itself).
    """
    lens = logit_lens(model, x)  # (D, B, T, V)
    rows = []
    for d, (label, logits) in enumerate(zip(layer_labels(model.config.n_layer), lens)):
        top = logits.argmax(-1)  # (B, T)
        rows.append({"depth": d, "layer": label, "loss": _loss(logits, y),
                     "accuracy": (top == y).float().mean().item(), "top_is_input": (top == x).float().mean().item()})
    return pd.DataFrame(rows)


@torch.no_grad()
def logit_lens_top_tokens(model: GPT, tokenizer, text: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The top prediction of every depth at every position of a probe text.

    Args:
        model: a GPT; tokenizer: its tokenizer (`encode`, and `tokens` for display strings).
        text: the probe; longer than block_size tokens, its last block_size are used.
    Returns:
        (top: the predicted tokens' display strings, prob: their probabilities), each indexed by
        layer label with one column per position named "i:token" (the input token there; the
        prediction is for position i + 1).
    """
    check_vocabulary(model, tokenizer)
    ids = tokenizer.encode(text)[-model.config.block_size:]
    if not ids:
        raise ValueError("the probe text encodes to no tokens; pass a non-empty text")
    device = next(model.parameters()).device  # the ids go where the model is (a GPU model, say)
    lens = logit_lens(model, torch.tensor([ids], device=device))[:, 0]  # (D, T, V)
    prob, top = (t.cpu() for t in lens.softmax(-1).max(-1))  # (D, T) each, on the CPU for the tables
    columns = [f"{i}:{tok}" for i, tok in enumerate(tokenizer.tokens(ids))]
    index = layer_labels(model.config.n_layer)
    return (pd.DataFrame([tokenizer.tokens(row.tolist()) for row in top], index=index, columns=columns),
            pd.DataFrame(prob.numpy(), index=index, columns=columns))
