"""Per-task classification heads and how their losses are combined.

Two weightings:

fixed:        L = sum_t w_t * L_t
uncertainty:  L = sum_t exp(-s_t) * L_t + s_t / 2,   s_t = log(sigma_t^2) learned
              (Kendall, Gal & Cipolla 2018, eq. 10, classification form
              1/sigma^2 * L_t + log sigma_t). For a fixed L_t the optimum is
              s_t = log(2 L_t): a task with a larger (noisier) loss gets a smaller weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finetune.errors import FinetuneError

Weighting = Literal["fixed", "uncertainty"]


class MultiTaskHead(nn.Module):
    """One linear classifier per task on the shared fused vector: logits {task: (B, C_t)}."""

    def __init__(self, hidden: int, num_classes: dict[str, int], dropout: float = 0.1) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({task: nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n))
                                    for task, n in num_classes.items()})

    def forward(self, fused: Tensor) -> dict[str, Tensor]:
        return {task: head(fused) for task, head in self.heads.items()}


def uncertainty_weighted_loss(losses: Tensor, log_variances: Tensor) -> Tensor:
    """sum_t exp(-s_t) * L_t + s_t / 2 for losses (T,) and s = log_variances (T,)."""
    return (torch.exp(-log_variances) * losses + 0.5 * log_variances).sum()


class TaskLossWeighting(nn.Module):
    """Combines per-task losses (T,) into one scalar, fixed or uncertainty-weighted."""

    def __init__(self, tasks: Sequence[str], weighting: Weighting = "fixed",
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.weighting = weighting
        if weights is not None and len(weights) != len(self.tasks):
            raise FinetuneError(
                f"{len(weights)} task weights given for {len(self.tasks)} tasks ({', '.join(self.tasks)}); "
                "give one weight per task"
            )
        fixed = torch.tensor(list(weights) if weights is not None else [1.0] * len(self.tasks))
        self.register_buffer("fixed_weights", fixed, persistent=False)
        # s_t = log sigma_t^2, starting at sigma = 1 (weight 1, like fixed weighting).
        self.log_variances = nn.Parameter(torch.zeros(len(self.tasks)), requires_grad=weighting == "uncertainty")

    def forward(self, losses: Tensor) -> Tensor:
        if self.weighting == "uncertainty":
            return uncertainty_weighted_loss(losses, self.log_variances)
        return (self.fixed_weights * losses).sum()

    def effective_weights(self) -> dict[str, float]:
        """The multiplier on each task's loss right now (exp(-s_t) or w_t)."""
        values = torch.exp(-self.log_variances) if self.weighting == "uncertainty" else self.fixed_weights
        return {task: float(v) for task, v in zip(self.tasks, values.detach())}


def per_task_losses(logits: dict[str, Tensor], targets: Tensor, tasks: Sequence[str]) -> Tensor:
    """Cross-entropy per task, (T,). targets (B, T) with class indices in task order."""
    return torch.stack([F.cross_entropy(logits[task], targets[:, i]) for i, task in enumerate(tasks)])
