"""Class weights, balanced sampling and focal loss against slow references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from finetune.methods.imbalance import balanced_indices, class_weights, classification_loss, focal_loss


def focal_reference(logits: torch.Tensor, target: torch.Tensor, gamma: float, weight: torch.Tensor | None) -> float:
    """Sample by sample, straight from the formula."""
    num, den = 0.0, 0.0
    for row, y in zip(logits.tolist(), target.tolist()):
        p = math.exp(row[y]) / sum(math.exp(v) for v in row)
        w = 1.0 if weight is None else weight[y].item()
        num += -w * (1 - p) ** gamma * math.log(p)
        den += w
    return num / den


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_loss_matches_reference(gamma: float, weighted: bool) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 5, generator=g, dtype=torch.float64) * 3
    target = torch.randint(5, (37,), generator=g)
    weight = torch.rand(5, generator=g, dtype=torch.float64) + 0.1 if weighted else None
    got = focal_loss(logits, target, gamma, weight).item()
    assert got == pytest.approx(focal_reference(logits, target, gamma, weight), rel=1e-9)


def test_gamma_zero_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(20, 4, generator=g), torch.randint(4, (20,), generator=g)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    reference = F.cross_entropy(logits, target, weight=weight)
    assert torch.allclose(focal_loss(logits, target, 0.0, weight), reference)
    assert torch.allclose(classification_loss(logits, target, weight=weight), reference)


def test_focal_down_weights_easy_examples() -> None:
    logits = torch.tensor([[5.0, 0.0], [0.2, 0.0]])  # one easy, one hard example of class 0
    target = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    fl = torch.stack([focal_loss(logits[i : i + 1], target[i : i + 1], 2.0) for i in range(2)])
    assert (fl / ce)[0] < 0.001 and (fl / ce)[1] > 0.2


def test_class_weights_balance_totals() -> None:
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    w = class_weights(labels, 4)
    assert torch.allclose(w[:3], torch.tensor([16 / 30, 16 / 15, 16 / 3]))
    assert w[3] == 0  # absent class
    totals = torch.bincount(labels, minlength=4)[:3] * w[:3]  # every present class carries the same weight
    assert torch.allclose(totals, totals[0].expand(3))


def test_balanced_indices_draw_classes_uniformly_and_deterministically() -> None:
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    draw = balanced_indices(labels, 30000, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[draw], minlength=3).float() / 30000
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.015)
    assert len(set(draw[labels[draw] == 2].tolist())) == 10  # every minority sample gets used
    again = balanced_indices(labels, 30000, torch.Generator().manual_seed(0))
    assert torch.equal(draw, again)
