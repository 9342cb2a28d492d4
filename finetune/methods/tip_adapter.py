"""Tip-Adapter and Tip-Adapter-F (Zhang et al. 2022): a key-value cache of the few shots.

    A = exp(-beta * (1 - f K^T))          affinity to the cached shots, K: (NK, D) keys
    logits = s * f T^T + alpha * A V       V: (NK, C) one-hot labels of the keys

Training-free: K are the training features; alpha, beta are searched on
validation. alpha = 0 (or beta = 0 with balanced shots, which adds the same
constant to every class) is the zero-shot classifier. Tip-Adapter-F starts
from that solution and fine-tunes the keys, then searches alpha, beta again.
alpha is searched relative to the logit scale (Tip-Adapter's grid assumes s = 100).
With class weighting or balanced sampling the value rows are weighted N/(C n_c),
so a large class cannot win on its number of cached shots alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finetune.methods.head_training import HeadTrainingConfig, train_head
from finetune.methods.imbalance import class_weights
from finetune.methods.task import FewShotTask, FittedModel

_CHUNK = 4096  # rows of queries per affinity block, to bound memory with large caches


class TipAdapterHead(nn.Module):
    """Zero-shot logits plus alpha times the cache logits."""

    def __init__(self, text_weights: Tensor, keys: Tensor, values: Tensor, *, logit_scale: float, alpha: float,
                 beta: float) -> None:
        super().__init__()
        self.register_buffer("text_weights", text_weights.detach().float().clone().contiguous())  # (C, D)
        self.keys = nn.Parameter(keys.detach().float().clone().contiguous())  # (NK, D)
        self.register_buffer("values", values.detach().float().clone().contiguous())  # (NK, C)
        self.logit_scale, self.alpha, self.beta = logit_scale, alpha, beta

    def cache_logits(self, features: Tensor, beta: float | None = None) -> Tensor:  # (N, D) -> (N, C)
        beta = self.beta if beta is None else beta
        blocks = [torch.exp(-beta * (1 - chunk @ self.keys.T)) @ self.values for chunk in features.split(_CHUNK)]
        return torch.cat(blocks) if blocks else features.new_zeros(0, self.values.shape[1])

    def zeroshot_logits(self, features: Tensor) -> Tensor:
        return self.logit_scale * features @ self.text_weights.T

    def forward(self, features: Tensor) -> Tensor:
        return self.zeroshot_logits(features) + self.alpha * self.cache_logits(features)

    def saved_config(self) -> dict[str, Any]:
        return {"logit_scale": self.logit_scale, "alpha": self.alpha, "beta": self.beta}

    @classmethod
    def from_saved(cls, state: dict[str, Tensor], config: dict[str, Any]) -> TipAdapterHead:
        return cls(state["text_weights"], state["keys"], state["values"], **config).eval()


@dataclass(kw_only=True)
class TipAdapterConfig:
    """Tip-Adapter(-F) settings."""

    betas: list[float] = field(default_factory=lambda: [round(0.1 + 0.3 * i, 2) for i in range(34)])
    """Sharpness values beta searched on validation (Tip-Adapter searches 0.1..7)."""
    alphas: list[float] = field(default_factory=lambda: [0.0] + torch.logspace(-1.3, 1.7, 31).tolist())
    """Residual weights searched, in units of logit_scale / 100 (Tip-Adapter searches 0.1..3 at s = 100)."""
    training: HeadTrainingConfig = field(default_factory=lambda: HeadTrainingConfig(epochs=20, min_steps=200))
    """Optimiser for Tip-Adapter-F's keys (AdamW 1e-3, cosine, as in the paper)."""


def build_cache(task: FewShotTask) -> TipAdapterHead:
    """Keys = training features, values = (weighted) one-hot labels; alpha = 0, beta = 1."""
    values = F.one_hot(task.train_y, task.num_classes).float()  # (NK, C)
    if task.imbalance.class_weight or task.imbalance.balanced_sampling:
        values = values * class_weights(task.train_y, task.num_classes)
    return TipAdapterHead(task.zeroshot_weights, task.train_x, values, logit_scale=task.logit_scale, alpha=0.0,
                          beta=1.0)


def search_alpha_beta(head: TipAdapterHead, task: FewShotTask, config: TipAdapterConfig) -> float:
    """Set head.alpha, head.beta to the best validation pair; return its score.

    Ties keep the smaller alpha (closer to zero-shot), then the smaller beta.
    """
    with torch.no_grad():
        zeroshot = head.zeroshot_logits(task.val_x)
        best = (task.score(zeroshot, task.val_y), 0.0, head.beta)
        unit = task.logit_scale / 100
        for beta in config.betas:
            cache = head.cache_logits(task.val_x, beta)
            for alpha in sorted(config.alphas):
                score = task.score(zeroshot + alpha * unit * cache, task.val_y)
                if score > best[0]:
                    best = (score, alpha * unit, beta)
    head.alpha, head.beta = best[1], best[2]
    return best[0]


def fit_tip_adapter(task: FewShotTask, config: TipAdapterConfig | None = None) -> FittedModel:
    """Training-free Tip-Adapter: cache the shots, search alpha and beta."""
    head = build_cache(task)
    score = search_alpha_beta(head, task, config or TipAdapterConfig())
    return _fitted(head, score)


def fit_tip_adapter_f(task: FewShotTask, config: TipAdapterConfig | None = None) -> FittedModel:
    """Tip-Adapter-F: start from the searched cache, fine-tune the keys, search again."""
    config = config or TipAdapterConfig()
    head = build_cache(task)
    search_alpha_beta(head, task, config)
    if head.alpha == 0:
        head.alpha = task.logit_scale / 100  # the keys get no gradient through a zero residual
    train_head(head, [head.keys], task, config.training)
    score = search_alpha_beta(head, task, config)
    return _fitted(head, score)


def _fitted(head: TipAdapterHead, score: float) -> FittedModel:
    hyper = {**head.saved_config(), "alpha_relative": head.alpha * 100 / head.logit_scale}
    return FittedModel(head=head.eval(), hyperparameters=hyper, val_score=score)
