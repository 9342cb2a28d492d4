"""Multi-positive InfoNCE and group-aware SigLIP against slow reference loops from the formulas."""

from __future__ import annotations

import math

import torch

from pretrain.losses import clip_loss, multi_positive_clip_loss, siglip_loss
from tests.pretrain.test_losses import mean_over_simulated_ranks, reference_siglip, unit


def reference_multi_positive(x: torch.Tensor, y: torch.Tensor, scale: float, groups: list[int],
                             weight: float = 0.0, tau: float = 1.0) -> float:
    """Each row's target: its group's positives equally, mixed (`weight`) with the softmax of its caption's
    similarity to every caption (temperature `tau`); weight 0 is plain multi-positive InfoNCE."""
    n = x.shape[0]
    sims = [[scale * float(x[i] @ y[j]) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        positives = [j for j in range(n) if groups[j] == groups[i]]
        caption_sims = [math.exp(float(y[i] @ y[j]) / tau) for j in range(n)]
        target = [(1 - weight) * (j in positives) / len(positives) + weight * caption_sims[j] / sum(caption_sims)
                  for j in range(n)]
        row = math.log(sum(math.exp(sims[i][j]) for j in range(n)))  # image i against every text
        column = math.log(sum(math.exp(sims[j][i]) for j in range(n)))  # text i against every image
        total += sum(t * (row - sims[i][j]) for j, t in enumerate(target))
        total += sum(t * (column - sims[j][i]) for j, t in enumerate(target))
    return total / (2 * n)


def test_multi_positive_loss_matches_reference_loop() -> None:
    x, y = unit(7, 16, 20), unit(7, 16, 21)
    groups = [0, 0, 1, 2, 2, 2, 3]
    loss = multi_positive_clip_loss(x, y, torch.tensor(8.0), torch.tensor(groups))
    assert abs(float(loss) - reference_multi_positive(x, y, 8.0, groups)) < 1e-5


def test_multi_positive_loss_with_distinct_groups_is_clip_loss() -> None:
    x, y = unit(6, 16, 22), unit(6, 16, 23)
    loss = multi_positive_clip_loss(x, y, torch.tensor(12.0), torch.arange(6) * 7)
    assert abs(float(loss) - float(clip_loss(x, y, torch.tensor(12.0)))) < 1e-6


def test_tied_drawings_of_one_concept_reach_the_minimum_of_the_group_target() -> None:
    """Two images on one shared caption: the group target's minimum is its entropy (log 2 for those two
    rows), reached there; plain InfoNCE counts the same configuration as a confusion."""
    caption = unit(1, 8, 24)
    others = unit(2, 8, 25)
    x = torch.cat([caption, caption, others])  # images 0 and 1 both sit on the shared caption
    y = torch.cat([caption, caption, others])
    grouped = float(multi_positive_clip_loss(x, y, torch.tensor(100.0), torch.tensor([5, 5, 6, 7])))
    assert abs(grouped - math.log(2) / 2) < 0.01  # rows 0 and 1 (of 4) pay their target entropy, log 2
    plain = float(clip_loss(x, y, torch.tensor(100.0)))
    assert abs(plain - math.log(2) / 2) < 0.01  # the same value, but plain InfoNCE's minimum is 0


def test_multi_positive_local_loss_over_simulated_ranks_averages_to_the_global_loss() -> None:
    x, y = unit(2 * 4, 16, 26), unit(2 * 4, 16, 27)  # 2 ranks of 4 pairs
    groups = torch.tensor([0, 1, 1, 2, 2, 3, 0, 4])
    full = float(multi_positive_clip_loss(x, y, torch.tensor(10.0), groups))
    local = mean_over_simulated_ranks(
        lambda xr, yr, gr, **kw: multi_positive_clip_loss(xr, yr, torch.tensor(10.0), gr, local_loss=True, **kw),
        2, x, y, groups)
    assert abs(local - full) < 1e-5


def test_siglip_with_groups_counts_every_same_group_pair_as_positive() -> None:
    x, y = unit(5, 16, 28), unit(5, 16, 29)
    groups = [0, 0, 1, 1, 2]
    loss = float(siglip_loss(x, y, torch.tensor(10.0), torch.tensor(-3.0), groups=torch.tensor(groups)))
    assert abs(loss - reference_siglip(x, y, 10.0, -3.0, groups)) < 1e-4
    distinct = float(siglip_loss(x, y, torch.tensor(10.0), torch.tensor(-3.0), groups=torch.arange(5)))
    assert abs(distinct - reference_siglip(x, y, 10.0, -3.0)) < 1e-4


def test_soft_targets_match_reference_loop_and_default_to_hard_targets() -> None:
    x, y = unit(7, 16, 40), unit(7, 16, 41)
    groups = [0, 0, 1, 2, 2, 2, 3]
    soft = multi_positive_clip_loss(x, y, torch.tensor(8.0), torch.tensor(groups), soft_weight=0.3,
                                    soft_temperature=0.2)
    assert abs(float(soft) - reference_multi_positive(x, y, 8.0, groups, 0.3, 0.2)) < 1e-5
    hard = multi_positive_clip_loss(x, y, torch.tensor(8.0), torch.tensor(groups), soft_weight=0.0)
    assert abs(float(hard) - reference_multi_positive(x, y, 8.0, groups)) < 1e-6


def test_soft_targets_push_less_against_captions_that_mean_nearly_the_same() -> None:
    """Texts 0 and 1 are near-synonyms; image 0 sits exactly on text 0. Hard targets push image 0 away from
    text 1 as from any negative; soft targets halve that push (the gradient's component away from text 1)."""
    y = unit(4, 8, 42)
    y[1] = torch.nn.functional.normalize(y[0] + 0.2 * y[1], dim=0)
    x = y.clone().requires_grad_(True)
    groups = torch.arange(4)

    def towards_text_1(weight: float) -> float:
        x.grad = None
        multi_positive_clip_loss(x, y, torch.tensor(20.0), groups, soft_weight=weight, soft_temperature=0.1).backward()
        return float(-x.grad[0] @ (y[1] - y[0]))  # descent direction's component towards text 1

    hard, soft = towards_text_1(0.0), towards_text_1(0.5)
    assert hard < soft < 0 and abs(soft) < 0.55 * abs(hard)
