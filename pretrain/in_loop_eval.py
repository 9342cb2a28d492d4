"""Run evaluators on the model being trained, without disturbing training.

The model is wrapped as an `Encoder` (eval mode, no grad); random number
generators are saved and restored around the evaluators, so evaluating (or
not) never changes the training run that follows. The loop's caller chooses
the evaluators (`evaluate.in_loop.evaluators_for`); pretrain only needs their
shape, so it never imports the layers above it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

import torch
from torch import nn

from pretrain.encoder import Encoder
from pretrain.rng_state import capture_rng, restore_rng

LOG = logging.getLogger(__name__)


class InLoopEvaluator(Protocol):
    """What the loop needs of an evaluator (`evaluate.evaluator.Evaluator` is one): named metrics for an encoder."""

    def run(self, encoder: Encoder) -> Iterable[tuple[str, float]]: ...


def run_evaluators(evaluators: Sequence[InLoopEvaluator], clip: nn.Module, *, model_name: str) -> dict[str, float]:
    """All evaluators' (name, value) pairs as one dict; the model is left in eval mode."""
    rng = capture_rng()
    try:
        encoder = Encoder.from_model(clip, model_name=model_name)
        with torch.no_grad():
            return {name: float(value) for evaluator in evaluators for name, value in evaluator.run(encoder)}
    finally:
        restore_rng(rng)
