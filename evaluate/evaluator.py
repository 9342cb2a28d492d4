"""The evaluator interface shared by the eval commands and in-loop evaluation.

An evaluator takes an encoder and yields `(name, value)` pairs (big_vision's
style): `evaluate.zeroshot.ZeroShotEvaluator` and
`evaluate.retrieval_recall.RetrievalEvaluator`. The training loop calls the
evaluators it is given (`evaluate.in_loop.evaluators_for` picks them for a val
split); it does not know which ones exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pretrain.encoder import Encoder


class Evaluator(Protocol):
    name: str

    def run(self, encoder: Encoder) -> Iterator[tuple[str, float]]:
        """Yield named metrics, e.g. ("zeroshot/top1", 0.42)."""
        ...
