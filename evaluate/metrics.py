"""Classification metrics for zero-shot and few-shot evaluation.

Everything is derived from one confusion matrix (rows: true class, columns:
predicted class), so the figures agree with each other. Conventions follow
scikit-learn so numbers can be compared with other tools:
  - precision/recall/F1 of a class with nothing to divide by are 0;
  - `mean_per_class_recall` and `macro_f1` both average over the classes
    present in `y_true` (sklearn's `balanced_accuracy_score`, and
    `f1_score(average="macro", labels=<classes present>)`): a class the data
    has no sample of (e.g. emoji "Component" in a val split) is not scored as
    a 0, however often it is predicted. The report says so in `averaged_over`
    and `classes_present`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor | Sequence[int]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; entry [t, p] counts samples of class t predicted as p."""
    flat = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def top_k_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the k highest scores."""
    k = min(k, scores.shape[1])
    # argpartition is O(N*C); order inside the top k does not matter for a hit.
    top = np.argpartition(-scores, kth=k - 1, axis=1)[:, :k]  # (N, k)
    return float((top == y_true[:, None]).any(axis=1).mean())


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_report(y_true: ArrayLike, y_pred: ArrayLike | None = None, scores: ArrayLike | None = None, *,
                          classnames: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5 accuracy, mean per-class recall, macro F1, per-class figures and confusion.

    y_true: (N,) class indices. y_pred: (N,) predicted indices; taken as the
    argmax of `scores` when omitted. scores: (N, C) any monotone class scores
    (logits, cosine similarities); needed for `top5` (None without it). With
    fewer than 5 classes `top5` is top-C accuracy (always 1.0).
    """
    num_classes = len(classnames)
    true = _as_numpy(y_true).astype(np.int64).reshape(-1)
    score_arr = None if scores is None else _as_numpy(scores).astype(np.float64)
    if y_pred is None:
        if score_arr is None:
            raise ValueError("classification_report needs y_pred or scores")
        pred = score_arr.argmax(axis=1)
    else:
        pred = _as_numpy(y_pred).astype(np.int64).reshape(-1)
    if true.shape != pred.shape or true.size == 0:
        raise ValueError(f"y_true {true.shape} and y_pred {pred.shape} must be equal, non-empty shapes")
    for name, arr in (("y_true", true), ("y_pred", pred)):
        if arr.min() < 0 or arr.max() >= num_classes:
            raise ValueError(f"{name} holds indices outside [0, {num_classes})")

    cm = confusion_matrix(true, pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)  # true count per class
    predicted = cm.sum(axis=0)  # predicted count per class
    precision = _safe_divide(tp, predicted.astype(np.float64))
    recall = _safe_divide(tp, support.astype(np.float64))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    present = support > 0
    return {
        "top1": float(tp.sum() / true.size),
        "top5": None if score_arr is None else top_k_accuracy(score_arr, true, 5),
        "mean_per_class_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "averaged_over": f"the {int(present.sum())} of {num_classes} classes present in the data (support > 0)",
        "classes_present": int(present.sum()),
        "n": int(true.size),
        "num_classes": num_classes,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classnames)
        },
        "classes": list(classnames),
        "confusion": cm.tolist(),
    }


def _as_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
