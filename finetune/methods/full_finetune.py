"""Full fine-tuning of the image tower with a zero-shot-initialised head (the reference).

The head starts as s * T (the zero-shot classifier), so step 0 is zero-shot;
the whole image tower and the head are then trained with AdamW on the shots.
This is what the adapters try to approach at a fraction of the cost, and what
WiSE-FT interpolates with the zero-shot weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finetune.methods.head_training import train_steps
from finetune.methods.linear_probe import LinearHead
from finetune.methods.task import FewShotTask, FittedModel, TaskImages


@dataclass(kw_only=True)
class FullFinetuneConfig:
    """Full fine-tuning settings."""

    epochs: int = 10
    """Passes over the training shots."""
    min_steps: int = 100
    """At least this many optimiser steps."""
    max_steps: int = 2000
    """At most this many optimiser steps (CPU budget)."""
    batch_size: int = 32
    """Images per step (capped at the training-set size)."""
    lr: float = 1e-4
    """Peak AdamW learning rate of the image tower (linear warm-up over 10 % of steps, cosine decay)."""
    head_lr: float = 1e-2
    """Peak learning rate of the head; at the tower's rate a hundred steps would barely move s*T."""
    weight_decay: float = 0.1
    """AdamW weight decay of the tower (CLIP fine-tuning default; the head has none)."""


def encode_images(visual: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """(N, 3, H, W) -> (N, D) L2-normalised features, without gradients."""
    with torch.no_grad():
        blocks = [F.normalize(visual(chunk.float()), dim=-1) for chunk in images.split(batch_size)]
    return torch.cat(blocks)


def fit_full_finetune(task: FewShotTask, images: TaskImages, config: FullFinetuneConfig | None = None) -> FittedModel:
    """Fine-tune a copy of the image tower and a zero-shot-initialised head on the shots."""
    config = config or FullFinetuneConfig()
    visual = copy.deepcopy(images.visual)
    # eval mode: no dropout and frozen norm statistics; with a few dozen images
    # batch statistics would be noise.
    visual.eval()
    head = LinearHead.zeroshot(task.zeroshot_weights, task.logit_scale)
    n = len(task.train_y)
    batch = min(config.batch_size, n)
    steps = min(config.max_steps, max(config.min_steps, config.epochs * math.ceil(n / batch)))
    visual.requires_grad_(True)  # the encoder may hand over a frozen tower
    optimizer = torch.optim.AdamW([
        {"params": list(visual.parameters()), "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": list(head.parameters()), "lr": config.head_lr, "weight_decay": 0.0},
    ])
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    train_steps(task, batch, steps, optimizer, schedule,
                lambda idx: head(F.normalize(visual(images.train[idx].float()), dim=-1)))
    visual.requires_grad_(False)
    head.requires_grad_(False)
    score = task.score(head(encode_images(visual, images.val)), task.val_y)
    hyper = {"steps": steps, "lr": config.lr, "head_lr": config.head_lr, "weight_decay": config.weight_decay,
             "batch_size": batch}
    return FittedModel(head=head, hyperparameters=hyper, val_score=score, image_tower=visual)
