"""Class-imbalance handling: class-weighted loss, balanced sampling, focal loss.

Three independent remedies for a train set where some classes have far more
examples than others. Each is a pure function of tensors so the trainers
(full-batch LBFGS and mini-batch AdamW alike) combine them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True, kw_only=True)
class ImbalanceConfig:
    """Which imbalance remedies a trainer applies."""

    class_weight: bool = False
    """Weight each sample's loss by N / (C * n_class), so every class carries the same total weight."""
    balanced_sampling: bool = False
    """Draw training samples class-uniformly (minority classes are over-sampled with replacement)."""
    focal_gamma: float = 0.0
    """Focal-loss focusing parameter; 0 is plain cross-entropy, 2 is the usual choice."""

    @property
    def active(self) -> bool:
        return self.class_weight or self.balanced_sampling or self.focal_gamma > 0


def class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """(C,) weights N / (P * n_c), P = number of present classes (scikit-learn's "balanced"); 0 if absent.

    Their count-weighted mean is 1, so a weighted loss keeps the scale of the plain one.
    """
    counts = torch.bincount(labels, minlength=num_classes).float()  # (C,)
    weights = labels.numel() / (int((counts > 0).sum()) * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def balanced_indices(labels: Tensor, num_samples: int, generator: torch.Generator) -> Tensor:
    """`num_samples` indices drawn with replacement, each present class equally likely.

    Within a class every sample is equally likely, so over many draws each class
    contributes the same number of examples whatever its size.
    """
    present = torch.unique(labels)  # (P,)
    which_class = present[torch.randint(len(present), (num_samples,), generator=generator)]
    out = torch.empty(num_samples, dtype=torch.long)
    for c in present.tolist():
        members = torch.nonzero(labels == c).flatten()
        slots = torch.nonzero(which_class == c).flatten()
        out[slots] = members[torch.randint(len(members), (len(slots),), generator=generator)]
    return out


def focal_loss(logits: Tensor, target: Tensor, gamma: float, weight: Tensor | None = None) -> Tensor:
    """Focal loss (Lin et al. 2017), mean over the batch.

    FL_i = -w_{y_i} (1 - p_i)^gamma log p_i,  p_i = softmax(logits_i)[y_i];
    reduced as sum_i FL_i / sum_i w_{y_i} (the convention of torch's weighted
    cross-entropy). gamma = 0 gives cross-entropy exactly.
    """
    log_p = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)  # (B,)
    modulating = (1 - log_p.exp()).clamp(min=0) ** gamma
    w = torch.ones_like(log_p) if weight is None else weight[target]
    return -(w * modulating * log_p).sum() / w.sum()


def classification_loss(logits: Tensor, target: Tensor, *, weight: Tensor | None = None,
                        focal_gamma: float = 0.0) -> Tensor:
    """Cross-entropy, or focal loss when focal_gamma > 0; `weight` is an optional (C,) class weight."""
    if focal_gamma > 0:
        return focal_loss(logits, target, focal_gamma, weight)
    return F.cross_entropy(logits, target, weight=weight)

