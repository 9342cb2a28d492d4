"""Where a head's inputs come from: one typed group for the few-shot methods and the fusion heads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class TrainEvalPathsConfig:
    """The checkpoint a head is fitted on, and the labelled shards it is trained and scored on."""

    checkpoint: str
    """Run dir (newest checkpoint) or checkpoint dir written by `clipline pretrain`."""
    train_data: str
    """Shard directory the head is trained on (few-shot methods draw their shots from it)."""
    eval_data: str
    """Shard directory the final report is computed on (never used for training or model selection; its classes
    must all be in the training data)."""
