"""`clipline finetune fusion`: image+text classification with fusion heads.

    clipline finetune fusion --checkpoint RUN --train-data DIR --eval-data DIR --out RUN2 \\
        --fusion gated --tasks category,subcategory [--towers frozen|last|full] [--task-weighting uncertainty]

`clipline finetune` forwards its first word `fusion` here. The old spellings
`clipline finetune fusion heatmap|compress` are `clipline explain` and
`clipline compress` now (clipline.commands.finetune forwards them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clipline.commands.errors import reported_errors
from clipline.flags import parse_config
from finetune.fusion.config import FusionConfig
from finetune.train_eval_paths import TrainEvalPathsConfig


@dataclass(kw_only=True)
class FusionRunConfig:
    """Train a fusion classifier on image+text pairs (one or more label fields)."""

    paths: TrainEvalPathsConfig
    """The checkpoint and the shards: image, caption and the --tasks label fields in each .json (top level or
    `labels`) (flags without prefix)."""
    out: str
    """Run directory for the classifier, report.json, metrics.jsonl and plots."""
    head: FusionConfig = field(default_factory=FusionConfig)
    """How to build and train the fusion classifier (flags without prefix)."""


def main(argv: list[str] | None = None) -> None:
    with reported_errors("finetune fusion"):
        run = parse_config(FusionRunConfig, argv, prog="clipline finetune fusion", flat=("paths", "head"))
        from finetune.fusion.run import train_fusion  # torch and the model code load after the flags parse

        train_fusion(run.paths, out=run.out, config=run.head)
