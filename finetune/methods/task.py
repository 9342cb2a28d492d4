"""What every few-shot method receives and returns.

A method sees frozen, L2-normalised image features of the k-shot train set and
of a validation set, plus the zero-shot head; it returns a head (features ->
logits) and, for methods that tune the image tower, that tower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from finetune.methods.imbalance import ImbalanceConfig


@dataclass(kw_only=True)
class FewShotTask:
    """One few-shot problem on cached features."""

    train_x: Tensor
    """(N, D) L2-normalised image features of the training shots."""
    train_y: Tensor
    """(N,) class indices into `classnames`."""
    val_x: Tensor
    """(M, D) features hyperparameters are chosen on (never the eval set)."""
    val_y: Tensor
    """(M,) class indices."""
    zeroshot_weights: Tensor
    """(C, D) L2-normalised class embeddings of the zero-shot classifier."""
    logit_scale: float
    """Temperature the zero-shot logits are multiplied by (the model's learned exp(logit_scale))."""
    classnames: list[str]
    """Class names, index = class id."""
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)
    """Imbalance remedies the trainers apply."""
    val_from_train: bool = False
    """The validation set was carved from the training data, so a final refit on both is fair."""
    seed: int = 0
    """Seed for any randomness inside the method (init, batch order)."""

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def dim(self) -> int:
        return self.train_x.shape[1]

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + offset)

    def score(self, logits: Tensor, labels: Tensor) -> float:
        """The validation score hyperparameters are chosen by.

        Top-1 accuracy, or mean per-class recall when an imbalance option is on
        (the point of those options is not to sacrifice the small classes).
        """
        pred = logits.argmax(dim=1)
        if not self.imbalance.active:
            return (pred == labels).float().mean().item()
        recalls = [(pred[labels == c] == c).float().mean() for c in labels.unique()]
        return torch.stack(recalls).mean().item()


@dataclass(kw_only=True)
class FittedModel:
    """A trained method: a head on image features and, optionally, a tuned image tower."""

    head: nn.Module
    """Module mapping (N, D) L2-normalised image features to (N, C) logits."""
    hyperparameters: dict[str, Any]
    """Settings chosen on validation (and fixed ones worth recording)."""
    val_score: float
    """Validation score of the chosen settings (see FewShotTask.score)."""
    image_tower: nn.Module | None = None
    """Fine-tuned copy of the image tower, or None when the encoder's features are used as they are."""
    curve: dict[float, FittedModel] = field(default_factory=dict)
    """WiSE-FT: the model at each mixing coefficient alpha, evaluated for the accuracy-vs-alpha figure."""


@dataclass(kw_only=True)
class TaskImages:
    """The images behind a task's features, for methods that tune the image tower."""

    train: Tensor
    """(N, 3, H, W) preprocessed training images, in the order of FewShotTask.train_x."""
    val: Tensor
    """(M, 3, H, W) preprocessed validation images, in the order of FewShotTask.val_x."""
    visual: nn.Module
    """The pretrained image tower (copied before tuning, never modified)."""
