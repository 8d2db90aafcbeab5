"""Classification metrics as plain numpy: one implementation for fine-tuning and evaluation.

Labels are integer class ids (index = position in the list of label names). Per-class and macro
scores follow scikit-learn's conventions (zero_division=0; macro = the unweighted mean over every
class in `labels`, absent ones included); tests check them against scikit-learn.

- `confusion`, `accuracy`, `macro_f1`: the numbers a training loop logs.
- `per_class_table`, `classification_metrics`, `calibration`: the evaluation card's tables.
- `split_metrics`: the JSON block a fine-tuning run writes per split (per-class scores and the
  confusion matrix as lists).
- `summarize_confusion`: what a confusion matrix says in words (recall per class, the pair of
  classes most often mistaken for each other), for narrative that must hold whatever a run gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch


def _as_labels(y, name: str, n_classes: int) -> np.ndarray:
    a = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D sequence of integer class ids, got shape {a.shape} dtype {a.dtype}; "
                         "map label names to ids first")
    if a.size and (a.min() < 0 or a.max() >= n_classes):
        raise ValueError(f"{name} has class id {a.min() if a.min() < 0 else a.max()} outside 0..{n_classes - 1}; "
                         "pass labels (or n_classes) covering every class")
    return a.astype(np.int64)


def _as_probs(probs, n: int | None = None) -> np.ndarray:
    p = np.asarray(probs.detach().float().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, n_classes), got shape {p.shape}")
    if n is not None and len(p) != n:
        raise ValueError(f"probs has {len(p)} rows for {n} examples; pass one row per example")
    if p.size and (p.min() < 0 or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4)):
        raise ValueError("each row of probs must be a probability distribution (>= 0, summing to 1); "
                         "apply softmax to logits first")
    return p


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Confusion matrix (n_classes, n_classes) of counts: row = true class, column = predicted (sklearn's layout)."""
    t, p = _as_labels(y_true, "y_true", n_classes), _as_labels(y_pred, "y_pred", n_classes)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} entries but y_pred {len(p)}; pass one prediction per example")
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def per_class_scores(m: np.ndarray) -> tuple[np.ndarray, ...]:
    """precision, recall, f1, support, predicted from a confusion matrix (n, n).

    0 where undefined, as sklearn's zero_division=0. F1 = 2TP / (2TP + FP + FN).
    """
    tp = np.diag(m).astype(np.float64)
    support, predicted = m.sum(axis=1), m.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = 2 * tp + (predicted - tp) + (support - tp)  # 2TP + FP + FN
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return precision, recall, f1, support, predicted


def per_class_table(y_true, y_pred, labels: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1, support (true count) and predicted count of each class.

    A class that is never predicted has precision 0, one that never occurs recall 0 (sklearn's
    zero_division=0).

    Args:
        y_true, y_pred: (N,) integer class ids in 0..len(labels)-1.
        labels: class names, index = class id.
    Returns:
        one row per class: label, precision, recall, f1, support, predicted.
    """
    precision, recall, f1, support, predicted = per_class_scores(confusion(y_true, y_pred, len(labels)))
    return pd.DataFrame({"label": list(labels), "precision": precision, "recall": recall, "f1": f1,
                         "support": support, "predicted": predicted})


def calibration(probs, y_true, n_bins: int = 10) -> tuple[float, pd.DataFrame]:
    """Expected calibration error and reliability-diagram data (Guo et al., 2017).

    Confidence = the largest probability, prediction = its class. Confidences go into n_bins
    equal-width bins (lower, upper] of [0, 1] (a confidence of exactly 0 joins the first bin);
    ECE = sum over bins of count/N * |accuracy - mean confidence|.

    Args:
        probs: (N, n_classes) probabilities (rows sum to 1).
        y_true: (N,) true class ids.
        n_bins: number of bins.
    Returns:
        (ece, bins): bins has one row per bin: bin, lower, upper, count, confidence (mean),
        accuracy, gap (accuracy - confidence); confidence/accuracy/gap are NaN for empty bins.
    """
    if not (isinstance(n_bins, (int, np.integer)) and n_bins >= 1):
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    y = np.asarray(y_true.detach().cpu() if isinstance(y_true, torch.Tensor) else y_true)
    p = _as_probs(probs, len(y))
    y = _as_labels(y, "y_true", p.shape[1])
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # (lower, upper]
    rows, ece = [], 0.0
    for b in range(n_bins):
        sel = which == b
        count = int(sel.sum())
        c = float(conf[sel].mean()) if count else float("nan")
        a = float(correct[sel].mean()) if count else float("nan")
        if count:
            ece += count / len(y) * abs(a - c)
        rows.append({"bin": b, "lower": edges[b], "upper": edges[b + 1], "count": count,
                     "confidence": c, "accuracy": a, "gap": a - c})
    return float(ece), pd.DataFrame(rows)


def classification_metrics(y_true, y_pred, labels: Sequence[str], probs=None, n_bins: int = 10) -> dict[str, float]:
    """Headline classification metrics.

    Args:
        y_true, y_pred: (N,) integer class ids in 0..len(labels)-1.
        labels: class names, index = class id.
        probs: optional (N, n_classes) predicted probabilities, for calibration and log-loss.
        n_bins: calibration bins.
    Returns:
        {"n", "accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1"} (macro =
        unweighted mean over ALL classes in `labels`, absent ones included, as sklearn's
        average="macro" with labels=range(n)); with probs also "ece", "mean_confidence" and
        "nll" (mean -log p(true class), nats).
    """
    m = confusion(y_true, y_pred, len(labels))
    precision, recall, f1, support, _ = per_class_scores(m)
    n = int(m.sum())
    out = {
        "n": n,
        "accuracy": float(np.trace(m) / n) if n else float("nan"),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / n) if n else float("nan"),
    }
    if probs is not None:
        p = _as_probs(probs, n)
        y = _as_labels(y_true, "y_true", len(labels))
        out["ece"], _ = calibration(p, y, n_bins)
        out["mean_confidence"] = float(p.max(axis=1).mean())
        out["nll"] = float(-np.log(np.clip(p[np.arange(n), y], 1e-12, None)).mean())
    return out


def accuracy(y_true, y_pred) -> float:
    """Share of correct predictions (NaN for no examples)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} entries but y_pred {len(p)}; pass one prediction per example")
    return float((t == p).mean()) if len(t) else float("nan")


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Unweighted mean of the per-class F1 over all `n_classes` classes."""
    return float(per_class_scores(confusion(y_true, y_pred, n_classes))[2].mean())


def split_metrics(y_true, y_pred, labels: Sequence[str], prefix: str = "") -> dict[str, Any]:
    """What a fine-tuning run reports for one split, JSON-ready and prefixed (e.g. "test_"):
    accuracy, macro_f1, per_class {label: {precision, recall, f1, support}}, confusion (lists)."""
    m = confusion(y_true, y_pred, len(labels))
    precision, recall, f1, support, _ = per_class_scores(m)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(labels)}
    n = int(m.sum())
    return {f"{prefix}accuracy": float(np.trace(m) / n) if n else float("nan"), f"{prefix}macro_f1": float(f1.mean()),
            f"{prefix}per_class": per_class, f"{prefix}confusion": m.tolist()}


@dataclass(frozen=True)
class ConfusionSummary:
    """What `summarize_confusion` reads off a confusion matrix; `str()` of it is two printable lines.

    Attributes:
        recall: per class (in label order), the share of its examples predicted as itself (0 for a
            class with no examples, as sklearn's zero_division=0).
        confused: the two classes most often mistaken for each other, counting both directions
            (first in label order on a tie); None when no example was mistaken at all.
        confused_count: examples of either class of `confused` predicted as the other.
        n: examples in the matrix.
    """

    recall: dict[str, float]
    confused: tuple[str, str] | None
    confused_count: int
    n: int

    def __str__(self) -> str:
        best, worst = max(self.recall, key=self.recall.get), min(self.recall, key=self.recall.get)
        ranked = f" (best recognised: {best}; worst: {worst})" if self.recall[best] > self.recall[worst] else ""
        lines = ["recall per true class: " + ", ".join(f"{k} {v:.0%}" for k, v in self.recall.items()) + ranked]
        if self.confused is None:
            lines.append("no example was predicted as another class")
        else:
            a, b = self.confused
            lines.append(f"most confused pair: {a} and {b}, {self.confused_count} of {self.n} examples "
                         f"({self.confused_count / self.n:.0%}) predicted as the other")
        return "\n".join(lines)


def summarize_confusion(matrix, labels: Sequence[str]) -> ConfusionSummary:
    """Per-class recall and the most-confused pair of classes of a confusion matrix.

    The pair (i, j), i < j, scores matrix[i, j] + matrix[j, i]: how often either class was
    predicted as the other.

    Args:
        matrix: (n, n) counts, row = true class, column = predicted (`confusion`, or the
            ``*_confusion`` lists of `split_metrics`); n >= 2.
        labels: n class names, index = class id.
    Returns:
        ConfusionSummary (print it for the sentence).
    """
    m = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"matrix must be square (n, n) with n >= 2 classes, got shape {m.shape}; "
                         "pass the counts metrics.confusion returns")
    if len(labels) != m.shape[0]:
        raise ValueError(f"{len(labels)} labels for a {m.shape[0]}-class matrix; pass one label per class")
    if m.size and (m.min() < 0 or not np.all(m == np.round(m))):
        raise ValueError("matrix must hold counts (non-negative integers); pass the counts, not row shares")
    m = m.astype(np.int64)
    _, recall, _, _, _ = per_class_scores(m)
    both = m + m.T  # (n, n): symmetric, off-diagonal = mistakes either way
    i, j = np.triu_indices(len(m), k=1)
    k = int(np.argmax(both[i, j]))
    count = int(both[i[k], j[k]])
    names = [str(x) for x in labels]
    return ConfusionSummary(recall={name: float(r) for name, r in zip(names, recall)},
                            confused=(names[i[k]], names[j[k]]) if count else None,
                            confused_count=count, n=int(m.sum()))
