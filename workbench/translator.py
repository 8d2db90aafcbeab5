"""Train an encoder–decoder on a translation task, load it back, translate, and score it.

    config = TranslationConfig(model={"n_embd": 96}, train={"max_iters": 600})
    result = seq2seq_train(load_pairs("dates"), config, "runs/dates")   # model/, checkpoints/, ...
    translator = load_translator("runs/dates")
    translator.translate(["jeudi 26 novembre 2026"], beam=4)          # ["2026-11-26"]
    decoding_table(translator, task.test, beams=(1, 4, 8))            # scores and sentences/s per width

Training is the workbench's own loop (`Trainer` through `Run`: the run directory, exact resume,
checkpoints in safetensors + JSON, early stopping on validation loss, callbacks for the live
plot). The model is `workbench.seq2seq.Seq2Seq`; sources and targets share one vocabulary
(`translation.PairTokenizer`), so the source and target embeddings are shared too.
`CrossAttentionSnapshots` keeps one sentence's cross-attention at every evaluation for the
alignment-over-training figure, and `month_alignment` measures how often the month digits of
the ISO date attend most to the month's name in the source.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .config import TrainConfig, _check, check_tokenizer, check_types, from_dict, updated
from .data import require_columns
from .run import Run, check_same_task, load_final, setup_device
from .seq2seq import Seq2Seq, Seq2SeqConfig, loss_evaluator, seq2seq_from_checkpoint, translate
from .seq2seq import cross_attention as model_cross_attention
from .seq2seq import cross_attentions as model_cross_attentions
from .train import Callback, History, Trainer
from .translation import BOS_ID, EOS_ID, PAD_ID, PairTask, PairTokenizer, encode_pairs, train_pair_tokenizer
from .translation_eval import (DATE_BLEU_TOKENIZE, ROWS_FIX, check_date_rows, comparison_row, per_locale_scores,
                               rule_based_dates)

log = logging.getLogger(__name__)

# Defaults: the date task on a laptop CPU, as notebook 05's default profile (profiles.Seq2SeqSettings) trains it:
# char level, 2+2 layers of width 64, 1500 steps of 64 pairs.
TRANSLATION_TRAIN = dict(batch_size=64, max_iters=1500, lr=3e-3, min_lr=3e-4, warmup_iters=50, eval_interval=250,
                         weight_decay=0.01, seed=0)
TRANSLATION_MODEL = dict(n_layer=2, n_dec_layer=2, n_head=4, n_embd=64, dropout=0.0, max_src_len=48, max_tgt_len=16)


def translation_train(**changes: Any) -> TrainConfig:
    return updated(from_dict(TrainConfig, TRANSLATION_TRAIN), changes)


def translation_model(**changes: Any) -> Seq2SeqConfig:
    """The model's shape; the vocabulary sizes are placeholders, set from the tokenizer at training time."""
    return from_dict(Seq2SeqConfig, {**TRANSLATION_MODEL, "shared_embeddings": True, **changes})


@dataclass
class TranslationConfig:
    """How to train a translator: tokenizer, model shape (`Seq2SeqConfig`) and the loop (`TrainConfig`).

    The vocabulary sizes and special ids of `model` are set from the tokenizer trained on the task
    (one vocabulary for both sides, shared embeddings), whatever they say here.
    """

    tokenizer: str = "char"  # char | bpe (shared by source and target)
    vocab_size: int = 1024  # bpe only: ids before the four specials
    eval_batch_size: int = 256
    val_translate: int = 200  # validation rows translated greedily at each evaluation (val_exact_match); 0: none
    model: Seq2SeqConfig = field(default_factory=translation_model)
    train: TrainConfig = field(default_factory=translation_train)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = translation_model(**self.model)
        if isinstance(self.train, dict):
            self.train = translation_train(**self.train)
        check_types(self)
        check_tokenizer(self.tokenizer, self.vocab_size, example=1024)
        _check(isinstance(self.eval_batch_size, int) and self.eval_batch_size > 0,
               f"eval_batch_size must be a positive integer, got {self.eval_batch_size!r}")
        _check(isinstance(self.val_translate, int) and self.val_translate >= 0,
               f"val_translate must be an integer >= 0 (0 skips it), got {self.val_translate!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_model_config(config: Seq2SeqConfig, tokenizer: PairTokenizer) -> Seq2SeqConfig:
    """`config` with the tokenizer's vocabulary (both sides, shared embeddings) and special ids."""
    return replace(config, src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size,
                   shared_embeddings=True, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)


# ---------------------------------------------------------------------------------------------
# Translating
# ---------------------------------------------------------------------------------------------


@dataclass
class Translator:
    """A trained encoder–decoder with what it needs to translate raw text."""

    model: Seq2Seq
    tokenizer: PairTokenizer
    config: TranslationConfig

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def source_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each source, stripped of surrounding whitespace as training sources are, cut to
        the model's max_src_len with a warning (empty or whitespace-only texts are refused)."""
        texts = [t.strip() for t in texts]
        empty = [i for i, t in enumerate(texts) if not t]
        if empty:
            raise ValueError(f"source {empty[0]} is empty; give every sentence some text")
        limit = self.model.config.max_src_len
        ids = [self.tokenizer.encode(t) for t in texts]
        long = [i for i, s in enumerate(ids) if len(s) > limit]
        if long:
            log.warning("%d source(s) are longer than max_src_len=%d tokens and are cut (source %d loses its last %d "
                        "of %d tokens); shorten them or train with a larger --max-src-len", len(long), limit, long[0],
                        len(ids[long[0]]) - limit, len(ids[long[0]]))
        return [s[:limit] for s in ids]

    def target_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each target, cut to leave room for <bos> in the model's max_tgt_len."""
        limit = self.model.config.max_tgt_len - 1
        return [self.tokenizer.encode(t)[:limit] for t in texts]

    @torch.no_grad()
    def translate_ids(self, texts: Sequence[str], beam: int = 1, batch_size: int | None = None) -> list[list[int]]:
        """Target ids (without <bos>/<eos>) of each text: greedy for beam=1, else beam search."""
        return translate(self.model, self.source_ids(texts), beam=None if beam == 1 else beam,
                         batch_size=batch_size or self.config.eval_batch_size)

    def translate(self, texts: Sequence[str] | str, beam: int = 1, batch_size: int | None = None) -> list[str]:
        """Translations of `texts` (a string gives a list of one)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not isinstance(beam, int) or beam < 1:
            raise ValueError(f"beam must be a positive integer (1 is greedy), got {beam!r}; pass e.g. --beam 4")
        return [self.tokenizer.decode(ids) for ids in self.translate_ids(texts, beam, batch_size)]


def load_translator(path: str | Path, device: str = "cpu") -> Translator:
    """Rebuild a translator from a seq2seq-train run directory or its model/ folder."""
    c = load_final(path, ("translation", "tokenizer", "config"), "point --checkpoint at a seq2seq-train run's --out",
                   "python -m workbench seq2seq-train --out DIR", kind="seq2seq-train")
    config = c.artifact("translation", lambda content: from_dict(TranslationConfig, content))
    tokenizer = c.artifact("tokenizer", PairTokenizer.from_dict)
    model = seq2seq_from_checkpoint(c)  # as seq2seq.load_seq2seq builds it
    # another run's tokenizer.json would still load, but its ids name other tokens: garbage translations
    src_size, tgt_size = model.config.src_vocab_size, model.config.tgt_vocab_size
    if src_size != tokenizer.vocab_size or tgt_size != tokenizer.vocab_size:
        raise ValueError(f"{c.path}/tokenizer.json has {tokenizer.vocab_size} tokens but the model expects "
                         f"src_vocab_size={src_size} and tgt_vocab_size={tgt_size}; "
                         "use the tokenizer.json saved with this checkpoint")
    return Translator(model.to(device).eval(), tokenizer, config)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _trim_pad(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the columns that are padding in every row of each (B, L) tensor."""
    return tuple(t[:, : int((t != PAD_ID).any(0).nonzero().max()) + 1] for t in tensors)


class _Evaluator:
    """A Trainer `evaluate` function: validation loss per target token (`seq2seq.loss_evaluator`: plain
    cross-entropy, so runs with and without label smoothing compare) and, on the first `n_translate`
    rows, greedy exact match."""

    def __init__(self, translator: Translator, rows: pd.DataFrame, n_translate: int, batch_size: int,
                 device: torch.device):
        cfg, tok = translator.model.config, translator.tokenizer
        # cut here once, as the training sources are (seq2seq_train warned about them), rather than
        # by `Translator.source_ids`, which would warn again at every evaluation
        sources = [tok.encode(s)[: cfg.max_src_len] for s in rows["source"]]
        self.loss = loss_evaluator(sources, translator.target_ids(rows["target"]), cfg, batch_size, device)
        self.translator, self.sources = translator, sources[:n_translate]
        self.targets = rows["target"].head(n_translate).tolist()

    def __call__(self, model) -> dict[str, float]:
        metrics = self.loss(model)
        if self.sources:
            outputs = translate(self.translator.model, self.sources, batch_size=self.translator.config.eval_batch_size)
            predictions = [self.translator.tokenizer.decode(ids) for ids in outputs]
            metrics["val_exact_match"] = float(np.mean([p == t for p, t in zip(predictions, self.targets)]))
        return metrics


class CrossAttentionSnapshots:
    """Trainer callback: one pair's cross-attention (n_dec_layer, n_head, T, S) before training
    (step 0, or the step a resumed run starts from) and at every evaluation, teacher-forced on its
    reference target so every snapshot has the same shape."""

    def __init__(self, source: str, target: str):
        self.source, self.target = source, target
        self.snapshots: list[tuple[int, torch.Tensor]] = []
        self.translator: Translator | None = None  # set by seq2seq_train

    def on_fit_start(self, trainer: Trainer, step: int) -> None:
        if not self.snapshots or self.snapshots[-1][0] != step:  # fit() in chunks: once a step
            self.on_eval(trainer, {})

    def on_eval(self, trainer: Trainer, record: dict) -> None:
        if self.translator is not None:
            self.snapshots.append((trainer.step, cross_attention(self.translator, self.source, self.target).weights))

    def frames(self, layer: int, head: int | None = None) -> list[tuple[int, torch.Tensor]]:
        """(step, (T, S) weights) of one head, or of the layer's mean over heads (head=None)."""
        from .capture import check_layer_head

        if self.snapshots:  # a ValueError naming the valid range rather than torch's IndexError
            check_layer_head(layer, head, *self.snapshots[0][1].shape[:2])
        return [(s, w[layer].mean(0) if head is None else w[layer, head]) for s, w in self.snapshots]


# the figures of a training run that `TranslationResult.summary` shows, in order
SUMMARY_KEYS = ("val_loss", "val_exact_match", "val_translated", "best_step", "params", "train_s", "tokens_per_s",
                "ms_per_iter_median")


@dataclass
class TranslationResult:
    translator: Translator
    history: History
    metrics: dict[str, Any]
    run_dir: Path | None

    @property
    def model(self) -> Seq2Seq:
        return self.translator.model

    def summary(self, keys: Sequence[str] = SUMMARY_KEYS) -> pd.Series:
        """The run's headline figures, for display.

        Args:
            keys: metrics to show, in order; one the run did not record (val_exact_match with
                val_translate=0, the best-step figures of an unfinished run) is left out.
        Returns:
            an object Series indexed by key, so counts (params, best_step, val_translated) show as
            integers beside the floats rather than as 240256.000.
        """
        return pd.Series({k: self.metrics[k] for k in keys if self.metrics.get(k) is not None}, dtype=object)


def seq2seq_train(task: PairTask, config: TranslationConfig | None = None, out_dir: str | Path | None = None,
                  callbacks: Iterable[Callback] = (), progress: bool = True, resume: bool | str = False) -> TranslationResult:
    """Train a translator on `task` as `config` says; write it to `out_dir` (if given).

    Args:
        task: from `translation.load_pairs`.
        config: TranslationConfig (default: the date task's laptop sizes).
        out_dir: run directory: model/ (model.safetensors, translation.json, tokenizer.json, task.json),
            checkpoints/, history.csv, metrics.json. Must be new or empty unless resuming.
        callbacks: Trainer callbacks (LiveLossPlot, CrossAttentionSnapshots, ...).
        progress: show a progress bar.
        resume: continue the run in out_dir exactly (see `workbench.run.Run`); "auto" when it has one.
    Returns:
        TranslationResult with the best-validation-loss weights; metrics hold val_loss and
        val_exact_match at the best step (greedy exact match of the first `val_translated` validation
        rows), the run's speed and size. Score the test split with `decoding_table` / `per_locale_scores`.
    """
    config = config or TranslationConfig()
    run = Run(out_dir, resume, kind="seq2seq-train")
    device = setup_device(config.train, run.dist)
    info = task.info()
    if run.saved is not None:
        run.check_same("translation", asdict(config), ignore=("train",))  # the loop may change, as pretrain's
        check_same_task(run.saved, info, "--task, --n-train, --n-val, --n-test, --locales, --split-seed, "
                                                "--source-col and --target-col")
        tokenizer = run.saved.artifact("tokenizer", PairTokenizer.from_dict)
    else:
        tokenizer = train_pair_tokenizer(task, config.tokenizer, config.vocab_size)
    model_config = fit_model_config(config.model, tokenizer)
    for side, flag, limit in (("source", "src", model_config.max_src_len),
                              ("target", "tgt", model_config.max_tgt_len - 1)):
        lengths = task.train[side].map(lambda text: len(tokenizer.encode(text)))
        if (lengths > limit).mean() > 0.01:
            log.warning("%.0f%% of the training %ss are longer than %d tokens and are cut; raise --max-%s-len",
                        100 * (lengths > limit).mean(), side, limit, flag)
    torch.manual_seed(config.train.seed)
    model = Seq2Seq(model_config)
    tc = config.train.resolved(len(task.train))  # --epochs counts passes over the training pairs
    translator = Translator(model, tokenizer, config)
    # max_tgt_len bounds the decoder's input, <bos> + target; the framed <bos> target <eos> is one longer
    train_src, train_tgt = encode_pairs(tokenizer, task.train, model_config.max_src_len, model_config.max_tgt_len + 1)
    n_train = len(train_src)

    def next_batch(generator: torch.Generator):
        ix = torch.randint(n_train, (tc.batch_size,), generator=generator)
        src, tgt = train_src[ix], train_tgt[ix]
        if not tc.cuda_graph:  # a CUDA graph replays one shape
            src, tgt = _trim_pad(src, tgt)
        return src.to(device), tgt[:, :-1].to(device), tgt[:, 1:].to(device)

    evaluate = _Evaluator(translator, task.val, config.val_translate, config.eval_batch_size, device)
    callbacks = list(callbacks)
    for cb in callbacks:
        if isinstance(cb, CrossAttentionSnapshots):
            cb.translator = translator
    artifacts = {"config": {"model": asdict(model_config)},  # what seq2seq.load_seq2seq reads
                 "translation": config.to_dict(), "tokenizer": tokenizer.to_dict(), "task": info}
    if task.source is not None:  # how to load the task again: a bare `seq2seq-train --resume` reads it
        artifacts["task_source"] = task.source
    trainer = Trainer(model, tc, next_batch, evaluate, run_dir=run.out, artifacts=artifacts, callbacks=callbacks,
                      progress=progress, dist=run.dist, device=device,
                      count_tokens=lambda batch: int((batch[0] != PAD_ID).sum() + (batch[1] != PAD_ID).sum()))
    completed = run.fit(trainer)
    model.eval()
    metrics: dict[str, Any] = {"task": task.name, **task.info(), **run.base_metrics(trainer),
                               "params": model.num_params(), "vocab_size": tokenizer.vocab_size,
                               "tokenizer": config.tokenizer, "steps": tc.max_iters,
                               "val_translated": min(config.val_translate, len(task.val))}
    if completed:
        evals = trainer.history.evals()
        best = evals[evals["step"] == trainer.best_step].iloc[-1] if trainer.best_step is not None else None
        if best is not None:
            metrics |= {k: float(best[k]) for k in ("val_loss", "val_exact_match") if k in best and pd.notna(best[k])}
        run.finish(trainer, artifacts, metrics)
    return TranslationResult(translator, trainer.history, metrics, run.out)


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


def timed_translations(translator: Translator, rows: pd.DataFrame, beam: int) -> tuple[list[str], float]:
    """Translations of rows["source"] with one beam width, and the sentences per second it took."""
    start = time.perf_counter()
    predictions = translator.translate(rows["source"].tolist(), beam=beam)
    return predictions, len(rows) / max(time.perf_counter() - start, 1e-9)


def decoding_table(translator: Translator, rows: pd.DataFrame, beams: Sequence[int] = (1, 4, 8),
                   reference: str | None = "dateparser", bleu_tokenize: str = DATE_BLEU_TOKENIZE
                   ) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Greedy and beam search side by side on `rows` (the test split), beside a rule-based parser.

    Args:
        rows: DataFrame with source, target and locale columns.
        beams: beam widths; 1 is greedy.
        reference: "dateparser" or "babel" for the date task's rule-based row; None leaves it out.
    Returns:
        (DataFrame indexed by decoder ("greedy", "beam 4", ..., "rule-based: <parser>") with columns n,
        exact_match, cer, chrf, bleu, sentences_per_s, beam (Int64, <NA> for the parser); {decoder: predictions}).
    """
    require_columns(rows, ["source", "target"], ROWS_FIX)
    if reference is not None:
        check_date_rows(rows)  # before minutes of decoding, not after
    table, predictions = [], {}
    for beam in beams:
        name = "greedy" if beam == 1 else f"beam {beam}"
        predictions[name], speed = timed_translations(translator, rows, beam)
        table.append(comparison_row(name, rows, predictions[name], speed, bleu_tokenize, beam=beam))
    if reference is not None:
        parser, ref_predictions, speed = rule_based_dates(rows, reference)
        name = f"rule-based: {parser}"
        predictions[name] = ref_predictions
        table.append(comparison_row(name, rows, ref_predictions, speed, bleu_tokenize, beam=np.nan))
    # beam widths are counts; the parser row has none ("Int64" keeps the column integer beside its <NA>)
    return pd.DataFrame(table).set_index("decoder").astype({"beam": "Int64"}), predictions


def locale_comparison(rows: pd.DataFrame, predictions: dict[str, Sequence[str]],
                      bleu_tokenize: str = DATE_BLEU_TOKENIZE, metric: str = "exact_match") -> pd.DataFrame:
    """One score per locale (rows) and decoder (columns), e.g. {"greedy": [...], "beam 4": [...]}."""
    return pd.DataFrame({name: per_locale_scores(rows, p, bleu_tokenize)[metric] for name, p in predictions.items()})


# ---------------------------------------------------------------------------------------------
# Cross-attention
# ---------------------------------------------------------------------------------------------


@dataclass
class CrossAttention:
    """One pair's cross-attention: weights (n_dec_layer, n_head, T, S), rows the decoder inputs
    (<bos> and the target's tokens: row t is what the model looked at while writing target token t),
    columns the source tokens."""

    weights: torch.Tensor
    source_tokens: list[str]
    target_tokens: list[str]  # the tokens written at each row: target + <eos>
    translation: str


def cross_attention(translator: Translator, source: str, target: str | None = None, beam: int = 1) -> CrossAttention:
    """Cross-attention of `source` while the decoder reads `target` (default: its own translation).

    Returns:
        CrossAttention with weights (n_dec_layer, n_head, T, S), T = target tokens + 1 (<eos>).
    """
    translation = translator.translate([source], beam=beam)[0]
    target = translation if target is None else target
    tok = translator.tokenizer
    src = translator.source_ids([source])[0]
    tgt = translator.target_ids([target])[0]
    weights = model_cross_attention(translator.model, src, tgt)
    return CrossAttention(weights, tok.tokens(src), tok.tokens([*tgt, EOS_ID]), translation)


MONTH_ROWS = (5, 6)  # decoder rows that write the month digits of "YYYY-MM-DD" (row t writes character t)


def month_alignment(translator: Translator, rows: pd.DataFrame, layers: Sequence[int] | None = None,
                    n: int | None = None) -> pd.DataFrame:
    """Where the month digits look: for each date row whose source writes the month as a word,
    the source token the ISO month digits attend to most (cross-attention summed over `layers`, all
    heads, and both month rows), and whether it lies inside the month word.

    Needs a character-level translator (source token i is source character i).

    Args:
        rows: date-task rows with month_start / month_end (-1 rows are skipped).
        layers: decoder layers to sum (default: all).
        n: at most this many rows (None: all).
    Returns:
        DataFrame: locale, format, source, argmax (token index), argmax_char, in_month (bool), month_mass
        (share of the summed weight on the month span).
    """
    if translator.tokenizer.kind != "char":
        raise ValueError("month_alignment needs a char-level translator (source token = character); train with tokenizer='char'")
    require_columns(rows, ["source", "target", "locale", "format", "month_start", "month_end"],
                    "pass the date task's rows (translation.date_task)")
    named = rows[rows["month_start"] >= 0]
    if n is not None:
        named = named.head(n)
    sources, targets = translator.source_ids(named["source"].tolist()), translator.target_ids(named["target"])
    size = translator.config.eval_batch_size
    weights = [w for i in range(0, len(sources), size)
               for w in model_cross_attentions(translator.model, sources[i : i + size], targets[i : i + size])]
    out = []
    for row, pair in zip(named.itertuples(), weights):
        w = pair if layers is None else pair[list(layers)]
        scores = w[:, :, list(MONTH_ROWS), :].sum(dim=(0, 1, 2))  # (S,)
        best = int(scores.argmax())
        inside = row.month_start <= best < row.month_end
        out.append({"locale": row.locale, "format": row.format, "source": row.source, "argmax": best,
                    "argmax_char": row.source[best] if best < len(row.source) else "", "in_month": inside,
                    "month_mass": float(scores[row.month_start : row.month_end].sum() / scores.sum())})
    return pd.DataFrame(out)
