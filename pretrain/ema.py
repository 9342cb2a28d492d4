"""Exponential moving average (EMA) of the trained weights, for evaluation and checkpoints.

After every optimizer step each trained parameter (and floating-point buffer,
e.g. BatchNorm statistics) is blended into a shadow copy:

    shadow <- d_t * shadow + (1 - d_t) * weight,   d_t = min(decay, (1 + t) / (10 + t))

The warm-up d_t keeps the first steps' random weights from dominating a short
run's average. Frozen parameters are not tracked: their average is themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The EMA of `model`'s trained tensors; `swapped_in` puts it in the model for a while."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        trained = {name for name, p in model.named_parameters() if p.requires_grad}
        trained |= {name for name, b in model.named_buffers() if b.is_floating_point()}
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if k in trained}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = model.state_dict()
        by_kind: dict[type, list[str]] = {}  # sharded (DTensor) and plain tensors cannot share one foreach call
        for key in self.shadow:
            by_kind.setdefault(type(state[key].detach()), []).append(key)
        for keys in by_kind.values():
            torch._foreach_lerp_([self.shadow[k] for k in keys], [state[k].detach() for k in keys], 1.0 - decay)

    @contextmanager
    @torch.no_grad()
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Evaluate with the averaged weights; the trained ones come back afterwards."""
        state = model.state_dict()
        raw = {k: state[k].clone() for k in self.shadow}
        for key, value in self.shadow.items():
            state[key].copy_(value)
        try:
            yield
        finally:
            for key, value in raw.items():
                state[key].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.updates = state["updates"]
