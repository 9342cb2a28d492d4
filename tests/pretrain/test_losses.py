"""Losses against slow reference loops written straight from the formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pretrain.losses import clip_loss, siglip_loss


def unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def reference_clip(x: torch.Tensor, y: torch.Tensor, scale: float) -> float:
    n = x.shape[0]
    sims = [[scale * float(x[i] @ y[j]) for j in range(n)] for i in range(n)]
    image_to_text = sum(-sims[i][i] + math.log(sum(math.exp(sims[i][j]) for j in range(n))) for i in range(n)) / n
    text_to_image = sum(-sims[j][j] + math.log(sum(math.exp(sims[i][j]) for i in range(n))) for j in range(n)) / n
    return 0.5 * (image_to_text + text_to_image)


def reference_siglip(x: torch.Tensor, y: torch.Tensor, scale: float, bias: float,
                     groups: list[int] | None = None) -> float:
    """With `groups`, every pair of the same group is a positive; else only i == j."""
    n, total = x.shape[0], 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if (groups[i] == groups[j] if groups is not None else i == j) else -1.0
            total -= math.log(1.0 / (1.0 + math.exp(-z * (scale * float(x[i] @ y[j]) + bias))))
    return total / n


def mean_over_simulated_ranks(loss: Callable[..., torch.Tensor], world: int, *full: torch.Tensor,
                              **options: object) -> float:
    """Mean of `loss` over `world` ranks, each given its rows of every tensor in `full`, a `gather` that
    returns what an all-gather across the ranks would (the whole tensor), and `options`."""
    per_rank = len(full[0]) // world
    local = []
    for rank in range(world):
        rows = [t[rank * per_rank:(rank + 1) * per_rank] for t in full]
        all_of = {id(part): whole for part, whole in zip(rows, full)}
        local.append(float(loss(*rows, gather=lambda t: all_of[id(t)], rank=rank, **options)))
    return sum(local) / world


def test_clip_loss_matches_reference_loop() -> None:
    x, y = unit(6, 16, 0), unit(6, 16, 1)
    loss = clip_loss(x, y, torch.tensor(7.5))
    assert abs(float(loss) - reference_clip(x, y, 7.5)) < 1e-5


def test_clip_loss_is_low_for_matching_pairs_and_high_for_shuffled() -> None:
    x = unit(8, 32, 2)
    assert float(clip_loss(x, x, torch.tensor(50.0))) < 0.05
    assert float(clip_loss(x, x.roll(1, 0), torch.tensor(50.0))) > 5.0


def test_clip_loss_clamps_scale_and_stops_its_gradient_above_max() -> None:
    x, y = unit(5, 8, 3), unit(5, 8, 4)
    scale = torch.tensor(500.0, requires_grad=True)
    loss = clip_loss(x, y, scale, max_logit_scale=100.0)
    assert abs(float(loss.detach()) - reference_clip(x, y, 100.0)) < 1e-4
    loss.backward()
    assert float(scale.grad) == 0.0


def test_local_loss_over_simulated_ranks_averages_to_the_global_loss() -> None:
    x, y = unit(3 * 4, 16, 5), unit(3 * 4, 16, 6)  # 3 ranks of 4 pairs
    full = float(clip_loss(x, y, torch.tensor(10.0)))
    local = mean_over_simulated_ranks(clip_loss, 3, x, y, logit_scale=torch.tensor(10.0), local_loss=True)
    assert abs(local - full) < 1e-5


def test_siglip_loss_matches_reference_loop() -> None:
    x, y = unit(5, 16, 7), unit(5, 16, 8)
    loss = siglip_loss(x, y, torch.tensor(10.0), torch.tensor(-3.0))
    assert abs(float(loss) - reference_siglip(x, y, 10.0, -3.0)) < 1e-4


def test_siglip_rank_losses_average_to_the_global_loss() -> None:
    x, y = unit(2 * 3, 16, 9), unit(2 * 3, 16, 10)  # 2 ranks of 3 pairs
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    full = float(siglip_loss(x, y, scale, bias))
    local = mean_over_simulated_ranks(siglip_loss, 2, x, y, logit_scale=scale, logit_bias=bias)
    assert abs(local - full) < 1e-5


def test_siglip_bias_and_scale_receive_gradients() -> None:
    x, y = unit(4, 8, 11), unit(4, 8, 12)
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    siglip_loss(x, y, scale, bias).backward()
    # at b=-10 every pair looks negative, so the positives pull the bias up
    assert float(bias.grad) < 0 and scale.grad is not None
