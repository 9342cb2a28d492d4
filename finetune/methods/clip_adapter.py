"""CLIP-Adapter (Gao et al. 2021): a residual bottleneck MLP on the frozen features.

    f' = normalize(r * A(f) + (1 - r) * f),   A(f) = ReLU(W2 ReLU(W1 f)),  W1: D -> D/reduction
    logits = s * f' T^T

(and optionally the same on the text side, T' = normalize(r A_t(T) + (1 - r) T)).
r = 0 is the zero-shot classifier; the blend ratio r is chosen on validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finetune.methods.head_training import HeadTrainingConfig, train_head
from finetune.methods.task import FewShotTask, FittedModel


def _bottleneck(dim: int, reduction: int) -> nn.Sequential:
    hidden = max(1, dim // reduction)
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False), nn.ReLU())


class ClipAdapterHead(nn.Module):
    """Zero-shot head with residual bottleneck adapters blended in at ratio r."""

    def __init__(self, text_weights: Tensor, logit_scale: float, *, ratio: float, reduction: int = 4,
                 adapt_text: bool = False) -> None:
        super().__init__()
        dim = text_weights.shape[1]
        self.register_buffer("text_weights", text_weights.detach().float().clone().contiguous())  # (C, D)
        self.image_adapter = _bottleneck(dim, reduction)
        self.text_adapter = _bottleneck(dim, reduction) if adapt_text else None
        self.logit_scale, self.ratio, self.reduction = logit_scale, ratio, reduction

    def _blend(self, adapter: nn.Module, x: Tensor) -> Tensor:
        return F.normalize(self.ratio * adapter(x) + (1 - self.ratio) * x, dim=-1)

    def forward(self, features: Tensor) -> Tensor:  # (N, D) -> (N, C)
        t = self.text_weights if self.text_adapter is None else self._blend(self.text_adapter, self.text_weights)
        return self.logit_scale * self._blend(self.image_adapter, features) @ t.T

    def saved_config(self) -> dict[str, Any]:
        return {"logit_scale": self.logit_scale, "ratio": self.ratio, "reduction": self.reduction,
                "adapt_text": self.text_adapter is not None}

    @classmethod
    def from_saved(cls, state: dict[str, Tensor], config: dict[str, Any]) -> ClipAdapterHead:
        head = cls(state["text_weights"], **config)
        head.load_state_dict(state)
        return head.eval()


@dataclass(kw_only=True)
class ClipAdapterConfig:
    """CLIP-Adapter settings."""

    ratios: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    """Blend ratios r tried; the best on validation is kept."""
    reduction: int = 4
    """Bottleneck width is D / reduction."""
    adapt_text: bool = False
    """Also adapt the class (text) embeddings."""
    training: HeadTrainingConfig = field(default_factory=lambda: HeadTrainingConfig(epochs=100, min_steps=300, lr=1e-2))
    """Optimiser settings."""


def fit_clip_adapter(task: FewShotTask, config: ClipAdapterConfig | None = None) -> FittedModel:
    """Train one adapter per blend ratio; keep the best on validation."""
    config = config or ClipAdapterConfig()
    scored: list[tuple[float, ClipAdapterHead]] = []
    for ratio in config.ratios:
        with torch.random.fork_rng():
            torch.manual_seed(task.seed)  # the adapter's init, without touching the caller's RNG
            head = ClipAdapterHead(task.zeroshot_weights, task.logit_scale, ratio=ratio, reduction=config.reduction,
                                   adapt_text=config.adapt_text)
        params = [p for p in head.parameters() if p.requires_grad]
        train_head(head, params, task, config.training)
        with torch.no_grad():
            score = task.score(head(task.val_x), task.val_y)
        scored.append((score, head))
    score, head = max(scored, key=lambda item: item[0])  # ties keep the ratio tried first
    return FittedModel(head=head, hyperparameters=head.saved_config(), val_score=score)
