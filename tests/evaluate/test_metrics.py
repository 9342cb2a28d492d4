"""classification_report against scikit-learn on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from evaluate.metrics import classification_report

CLASSES = [f"class{i}" for i in range(7)]


def _predictions(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy scores; class 5 never true but sometimes predicted; class 6 never true nor predicted."""
    rng = np.random.default_rng(seed)
    y_true = rng.choice(5, size=300, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    scores = rng.normal(size=(300, 7))
    scores[np.arange(300), y_true] += 1.2
    scores[:, 5] += 0.6  # a distractor class that wins sometimes
    scores[:, 6] -= 10.0
    return y_true, scores.argmax(axis=1), scores


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_matches_sklearn_on_noisy_predictions() -> None:
    y_true, y_pred, scores = _predictions()
    assert 0 < (y_pred == 5).sum() and (y_pred == 6).sum() == 0  # the edge cases are really exercised
    report = classification_report(y_true, y_pred, scores, classnames=CLASSES)
    labels = list(range(len(CLASSES)))
    assert report["top1"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert report["top5"] == pytest.approx(skm.top_k_accuracy_score(y_true, scores, k=5, labels=labels))
    assert report["mean_per_class_recall"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    present = sorted(set(y_true.tolist()))
    assert len(present) < len(CLASSES) and 5 not in present  # a predicted class with no sample of its own
    assert report["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", labels=present))
    assert report["macro_f1"] != pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert report["classes_present"] == len(present) and f"{len(present)} of {len(CLASSES)}" in report["averaged_over"]
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    for i, name in enumerate(CLASSES):
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
    assert report["confusion"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert report["n"] == 300


def test_predictions_default_to_argmax_of_scores_and_accept_tensors() -> None:
    y_true, y_pred, scores = _predictions(seed=1)
    from_scores = classification_report(torch.from_numpy(y_true), scores=torch.from_numpy(scores), classnames=CLASSES)
    explicit = classification_report(y_true, y_pred, scores, classnames=CLASSES)
    assert from_scores == explicit


def test_hand_computed_small_case() -> None:
    # true: a a a b b c ; pred: a b a b a c
    report = classification_report([0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 0, 2], classnames=["a", "b", "c"])
    assert report["top1"] == pytest.approx(4 / 6)
    assert report["top5"] is None  # no scores given
    assert report["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert report["per_class"]["b"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert report["mean_per_class_recall"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert report["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_top5_with_fewer_than_five_classes_is_top_c() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2]])
    report = classification_report([0, 0], scores=scores, classnames=["x", "y"])
    assert report["top1"] == 0.5
    assert report["top5"] == 1.0


def test_rejects_out_of_range_and_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="outside"):
        classification_report([0, 3], [0, 1], classnames=["a", "b"])
    with pytest.raises(ValueError, match="shapes"):
        classification_report([0, 1], [0], classnames=["a", "b"])
