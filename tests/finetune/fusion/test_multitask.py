"""Per-task heads and loss weighting: fixed weights and Kendall et al.'s uncertainty weighting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from finetune.errors import FinetuneError
from finetune.fusion.multitask import MultiTaskHead, TaskLossWeighting, per_task_losses, uncertainty_weighted_loss


def test_uncertainty_weighting_formula() -> None:
    losses, s = torch.tensor([2.0, 0.5]), torch.tensor([0.3, -0.2])
    want = math.exp(-0.3) * 2.0 + 0.15 + math.exp(0.2) * 0.5 - 0.1
    assert uncertainty_weighted_loss(losses, s).item() == pytest.approx(want, rel=1e-6)


def test_learned_log_variance_settles_at_log_of_twice_the_loss() -> None:
    """d/ds [exp(-s) L + s/2] = 0  <=>  s = log(2L): a noisier task gets weight 1/(2L)."""
    weighting = TaskLossWeighting(["a", "b"], "uncertainty")
    losses = torch.tensor([3.0, 0.25])
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.1)
    for _ in range(600):
        optimizer.zero_grad()
        weighting(losses).backward()
        optimizer.step()
    torch.testing.assert_close(weighting.log_variances.detach(), torch.log(2 * losses), atol=1e-3, rtol=0)
    weights = weighting.effective_weights()
    assert weights["a"] == pytest.approx(1 / 6, abs=1e-3) and weights["b"] == pytest.approx(2.0, abs=1e-2)


def test_fixed_weighting_and_its_checks() -> None:
    weighting = TaskLossWeighting(["a", "b", "c"], "fixed", [1.0, 0.5, 2.0])
    assert weighting(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx(8.0)
    assert not weighting.log_variances.requires_grad
    assert TaskLossWeighting(["a", "b"])(torch.tensor([1.5, 2.5])).item() == pytest.approx(4.0)
    with pytest.raises(FinetuneError, match="2 task weights given for 3 tasks"):
        TaskLossWeighting(["a", "b", "c"], "fixed", [1.0, 2.0])


def test_multitask_head_and_per_task_losses() -> None:
    torch.manual_seed(0)
    head = MultiTaskHead(8, {"category": 4, "subcategory": 9}, dropout=0.0)
    fused = torch.randn(6, 8)
    logits = head(fused)
    assert logits["category"].shape == (6, 4) and logits["subcategory"].shape == (6, 9)
    targets = torch.tensor([[0, 8], [1, 2], [3, 0], [2, 5], [0, 1], [1, 7]])
    losses = per_task_losses(logits, targets, ["category", "subcategory"])
    torch.testing.assert_close(losses, torch.stack([F.cross_entropy(logits["category"], targets[:, 0]),
                                                    F.cross_entropy(logits["subcategory"], targets[:, 1])]))
