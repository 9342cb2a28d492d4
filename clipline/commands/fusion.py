"""`clipline finetune fusion`: image+text classification with fusion heads.

    clipline finetune fusion --checkpoint RUN --train-data DIR --eval-data DIR --out RUN2 \\
        --fusion gated --tasks category,subcategory [--towers frozen|last|full] [--task-weighting uncertainty]

`clipline finetune` forwards its first word `fusion` here (with or without that word).
The old spellings `clipline finetune fusion heatmap|compress` still work for one
release, with a notice: they are `clipline explain` and `clipline compress` now.
"""

from __future__ import annotations

import importlib
import sys
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


def run_fusion(argv: list[str]) -> None:
    from finetune.fusion.run import train_fusion  # torch and the model code load after the flags parse

    run = parse_config(FusionRunConfig, argv, prog="clipline finetune fusion", flat=("paths", "head"))
    train_fusion(run.paths, out=run.out, config=run.head)


# old word -> (new command word, its module)
RENAMED = {"heatmap": ("explain", "clipline.commands.explain"), "compress": ("compress", "clipline.commands.compress")}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fusion"]:
        argv = argv[1:]
    if argv and argv[0] in RENAMED:
        forward_renamed(argv[0], argv[1:])
        return
    with reported_errors("finetune fusion"):
        run_fusion(argv)


def forward_renamed(word: str, argv: list[str]) -> None:
    """The old spelling `clipline finetune fusion heatmap|compress`: a one-line notice, then the new command."""
    new_word, module = RENAMED[word]
    print(f"note: `clipline finetune fusion {word}` is now `clipline {new_word}`; the old spelling will be "
          "removed in the next release", file=sys.stderr)
    importlib.import_module(module).main(argv, prog=f"clipline {new_word}")
