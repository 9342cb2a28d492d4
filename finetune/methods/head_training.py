"""Mini-batch AdamW training of a head on cached features (CLIP-Adapter, Tip-Adapter-F; full fine-tuning
shares the step loop).

Few-shot sets are tiny (1-shot x 10 classes is 10 samples), so the budget is
counted in steps with a floor, not only in epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from finetune.methods.imbalance import balanced_indices, class_weights, classification_loss
from finetune.methods.task import FewShotTask


@dataclass(kw_only=True)
class HeadTrainingConfig:
    """Optimiser settings for a head trained on features."""

    epochs: int = 20
    """Passes over the training shots."""
    min_steps: int = 200
    """At least this many optimiser steps, however few the shots."""
    batch_size: int = 256
    """Samples per step (capped at the training-set size)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (cosine decay to 0)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""


def train_head(head: nn.Module, params: list[nn.Parameter], task: FewShotTask, config: HeadTrainingConfig) -> None:
    """Train `params` of `head` on task.train_x/train_y in place."""
    n = len(task.train_y)
    batch = min(config.batch_size, n)
    steps = max(config.min_steps, config.epochs * math.ceil(n / batch))
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, eps=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    head.train()
    train_steps(task, batch, steps, optimizer, schedule, lambda idx: head(task.train_x[idx]))
    head.eval()


def train_steps(task: FewShotTask, batch: int, steps: int, optimizer: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler, logits: Callable[[Tensor], Tensor]) -> None:
    """`steps` optimiser steps on the task's (imbalance-aware) classification loss; `logits` of a batch's indices."""
    weight = class_weights(task.train_y, task.num_classes) if task.imbalance.class_weight else None
    for idx in batch_indices(task, batch, steps):
        loss = classification_loss(logits(idx), task.train_y[idx], weight=weight,
                                   focal_gamma=task.imbalance.focal_gamma)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def batch_indices(task: FewShotTask, batch: int, steps: int) -> Iterator[Tensor]:
    """Shuffled epochs, or class-uniform draws when balanced sampling is on."""
    generator = task.generator(offset=2)
    n = len(task.train_y)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if task.imbalance.balanced_sampling:
            yield balanced_indices(task.train_y, batch, generator)
            continue
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        yield order[:batch]
        order = order[batch:]
