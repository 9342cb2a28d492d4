"""Synthetic few-shot problems with known answers: Gaussian clusters on the unit sphere.

Class c's features are normalize(centre_c + spread * noise). The zero-shot head
is chosen to be right (the centres), wrong (the centres of other classes) or
random, so a method's effect is measurable against a known zero-shot accuracy.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finetune.methods.full_finetune import encode_images
from finetune.methods.imbalance import ImbalanceConfig
from finetune.methods.task import FewShotTask, TaskImages


def cluster_centres(num_classes: int, dim: int, seed: int) -> Tensor:
    """(C, D) unit vectors, well apart (orthonormal rows when C <= D)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    return q[:num_classes]


def draw(centres: Tensor, per_class: list[int], spread: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Features (sum(per_class), D) and labels, class by class."""
    labels = torch.arange(len(per_class)).repeat_interleave(torch.tensor(per_class))
    noise = torch.cat([torch.randn(n, centres.shape[1], generator=generator) for n in per_class])
    return F.normalize(centres[labels] + spread * noise, dim=-1), labels


def cluster_task(*, num_classes: int = 4, dim: int = 16, shots: int | list[int] = 8, eval_per_class: int = 50,
                 spread: float = 0.15, zeroshot: Literal["right", "wrong", "random"] = "wrong",
                 imbalance: ImbalanceConfig | None = None, seed: int = 0) -> tuple[FewShotTask, Tensor, Tensor]:
    """A FewShotTask plus a held-out eval set (eval_x, eval_y) from the same clusters."""
    centres = cluster_centres(num_classes, dim, seed)
    g = torch.Generator().manual_seed(seed + 1)
    per_class = [shots] * num_classes if isinstance(shots, int) else list(shots)
    train_x, train_y = draw(centres, per_class, spread, g)
    val_x, val_y = draw(centres, [4] * num_classes, spread, g)
    eval_x, eval_y = draw(centres, [eval_per_class] * num_classes, spread, g)
    if zeroshot == "right":
        weights = centres
    elif zeroshot == "wrong":
        weights = centres.roll(1, dims=0)  # class c's prompt points at class c-1's images
    else:
        weights = F.normalize(torch.randn(num_classes, dim, generator=g), dim=-1)
    task = FewShotTask(
        train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, zeroshot_weights=weights,
        logit_scale=20.0, classnames=[f"class{c}" for c in range(num_classes)],
        imbalance=imbalance or ImbalanceConfig(), seed=seed,
    )
    return task, eval_x, eval_y


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return (logits.argmax(dim=1) == labels).float().mean().item()


def mean_per_class_recall(logits: Tensor, labels: Tensor) -> float:
    pred = logits.argmax(dim=1)
    return torch.stack([(pred[labels == c] == c).float().mean() for c in labels.unique()]).mean().item()


def zeroshot_logits(task: FewShotTask, x: Tensor) -> Tensor:
    return task.logit_scale * x @ task.zeroshot_weights.T


class PixelTower(nn.Module):
    """A stand-in image tower: flatten (3, 4, 4) pixels, project to D."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(48, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images.flatten(1))


def image_task(seed: int = 0) -> tuple[FewShotTask, TaskImages, torch.Tensor, torch.Tensor]:
    """Images whose class is a pixel pattern the random tower does not separate well."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        tower = PixelTower(8)
    patterns = cluster_centres(4, 48, seed) * 7  # (C, 48)

    def images(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(4).repeat_interleave(per_class)
        x = patterns[y] + torch.randn(len(y), 48, generator=g)
        return x.reshape(-1, 3, 4, 4), y

    train_im, train_y = images(8)
    val_im, val_y = images(4)
    eval_im, eval_y = images(50)
    weights = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    task = FewShotTask(
        train_x=encode_images(tower, train_im), train_y=train_y, val_x=encode_images(tower, val_im), val_y=val_y,
        zeroshot_weights=weights, logit_scale=10.0, classnames=list("abcd"), seed=seed,
    )
    return task, TaskImages(train=train_im, val=val_im, visual=tower), eval_im, eval_y
