"""Linear probe: L2-regularised logistic regression on frozen image features.

As in CLIP and CLIP_benchmark, the regularisation strength is swept on a
validation split and, when that split was carved from the training data, the
probe is refit on train + val with the chosen strength. Fit full-batch with
LBFGS in torch, so it can start from (and be regularised towards) the
zero-shot head:

    min_{W,b}  loss(x W^T + b, y) + lambda/2 * ||W - W0||^2,   W0 = s * T  or  0

With W0 = s*T (zero-shot text embeddings times the logit scale, and then the
bias is also pulled towards 0) a large lambda gives back the zero-shot
classifier and a small one free logistic regression,
so the sweep decides how far the few shots may move the head. `init="auto"`
tries both W0 and keeps the better on validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from finetune.methods.imbalance import balanced_indices, class_weights, classification_loss
from finetune.methods.task import FewShotTask, FittedModel


class LinearHead(nn.Module):
    """logits = x W^T + b."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().float().clone().contiguous())  # (C, D)
        self.bias = nn.Parameter(bias.detach().float().clone().contiguous())  # (C,)

    @classmethod
    def zeroshot(cls, text_weights: Tensor, logit_scale: float) -> LinearHead:
        """The zero-shot classifier as a linear head: s * T, no bias."""
        return cls(logit_scale * text_weights, torch.zeros(len(text_weights)))

    def forward(self, features: Tensor) -> Tensor:  # (N, D) -> (N, C)
        return features @ self.weight.T + self.bias

    def saved_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_saved(cls, state: dict[str, Tensor], config: dict[str, Any]) -> LinearHead:
        return cls(state["weight"], state["bias"])


@dataclass(kw_only=True)
class LinearProbeConfig:
    """Linear-probe settings."""

    init: Literal["auto", "zeroshot", "zero"] = "auto"
    """Start from and regularise towards the zero-shot head, or zero (plain logistic regression); auto tries both."""
    l2_grid: list[float] = field(default_factory=lambda: [10.0**e for e in range(1, -7, -1)])
    """Regularisation strengths swept on validation (refined by half-decades around the best)."""
    max_iter: int = 100
    """LBFGS iterations per strength (each strength warm-starts from the previous one)."""


def fit_logistic_regression(x: Tensor, y: Tensor, *, weight: Tensor, bias: Tensor, prior: Tensor, l2: float,
                            class_weight: Tensor | None = None, focal_gamma: float = 0.0, max_iter: int = 100,
                            penalise_bias: bool = False) -> tuple[Tensor, Tensor]:
    """Minimise loss(x W^T + b, y) + l2/2 (||W - prior||^2 [+ ||b||^2]) with LBFGS from (weight, bias).

    The bias is unpenalised by default, as in scikit-learn's lbfgs solver.
    """
    w = weight.detach().clone().contiguous().requires_grad_(True)  # (C, D)
    b = bias.detach().clone().contiguous().requires_grad_(True)  # (C,)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-7,
                                  tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        data_loss = classification_loss(x @ w.T + b, y, weight=class_weight, focal_gamma=focal_gamma)
        penalty = (w - prior).pow(2).sum() + (b.pow(2).sum() if penalise_bias else 0.0)
        loss = data_loss + 0.5 * l2 * penalty
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def fit_linear_probe(task: FewShotTask, config: LinearProbeConfig | None = None) -> FittedModel:
    """Sweep init x l2 on validation, refit on train+val when val came from train."""
    config = config or LinearProbeConfig()
    x, y, cw = _training_data(task, task.train_x, task.train_y)
    inits = ["zeroshot", "zero"] if config.init == "auto" else [config.init]
    best: tuple[float, str, float, Tensor, Tensor] | None = None
    for init in inits:
        prior = _prior(task, init)
        w, b = prior.clone(), torch.zeros(task.num_classes)
        for l2 in sorted(config.l2_grid, reverse=True):  # strong -> weak: warm starts, ties keep the stronger
            w, b = _fit(task, x, y, cw, w, b, prior, l2, config)
            score = task.score(task.val_x @ w.T + b, task.val_y)
            if best is None or score > best[0]:
                best = (score, init, l2, w, b)
    assert best is not None
    score, init, l2, w, b = best
    prior = _prior(task, init)
    for refined in (l2 * math.sqrt(10), l2 / math.sqrt(10)):
        rw, rb = _fit(task, x, y, cw, w, b, prior, refined, config)
        refined_score = task.score(task.val_x @ rw.T + rb, task.val_y)
        if refined_score > score:
            score, l2, w, b = refined_score, refined, rw, rb
    if task.val_from_train and len(task.val_y):
        x, y, cw = _training_data(task, torch.cat([task.train_x, task.val_x]), torch.cat([task.train_y, task.val_y]))
        w, b = _fit(task, x, y, cw, w, b, prior, l2, config)
    hyper = {"init": init, "l2": l2, "refit_on_val": task.val_from_train}
    return FittedModel(head=LinearHead(w, b), hyperparameters=hyper, val_score=score)


def _prior(task: FewShotTask, init: str) -> Tensor:
    if init == "zeroshot":
        return task.logit_scale * task.zeroshot_weights
    return torch.zeros(task.num_classes, task.dim, dtype=task.train_x.dtype)


def _training_data(task: FewShotTask, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Features, labels and class weights (from the labels as given) for a full-batch fit.

    Full-batch balanced sampling is one class-uniform resample of the same size.
    """
    weight = class_weights(y, task.num_classes) if task.imbalance.class_weight else None
    if not task.imbalance.balanced_sampling:
        return x, y, weight
    idx = balanced_indices(y, len(y), task.generator(offset=1))
    return x[idx], y[idx], weight


def _fit(task: FewShotTask, x: Tensor, y: Tensor, class_weight: Tensor | None, w: Tensor, b: Tensor,
         prior: Tensor, l2: float, config: LinearProbeConfig) -> tuple[Tensor, Tensor]:
    return fit_logistic_regression(x, y, weight=w, bias=b, prior=prior, l2=l2, class_weight=class_weight,
                                   focal_gamma=task.imbalance.focal_gamma, max_iter=config.max_iter,
                                   penalise_bias=bool(prior.any()))
