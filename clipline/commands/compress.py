"""`clipline compress`: size, speed and quality of a checkpoint's fp32, bf16, int8 and pruned towers.

    clipline compress --checkpoint RUN --data DIR [--train-data DIR] --out DIR [--variants fp32,bf16,int8,pruned]

Writes compress.json (and pruned/, int8/) in --out and prints the table as
markdown (`finetune.compress.table`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clipline.commands.errors import reported_errors
from clipline.commands.model_choice import CheckpointPathsConfig
from clipline.flags import parse_config
from finetune.compress.table import CompressConfig


@dataclass(kw_only=True)
class CompressRunConfig:
    """Size, speed and quality of fp32, bf16, int8 and pruned towers."""

    paths: CheckpointPathsConfig
    """The checkpoint to compress, the eval shards for quality and timing, the directory for compress.json, pruned/
    (a checkpoint) and int8/ (flags without prefix)."""
    train_data: str | None = None
    """Shards for the pruned model's recovery fine-tune (none: no recovery)."""
    compress: CompressConfig = field(default_factory=CompressConfig)
    """Which variants to build and how to measure them (flags without prefix)."""


def main(argv: list[str] | None = None) -> None:
    from finetune.compress.table import compression_table, markdown_table

    with reported_errors("compress"):
        run = parse_config(CompressRunConfig, argv, prog="clipline compress", flat=("paths", "compress"))
        paths = run.paths
        table = compression_table(checkpoint=paths.checkpoint, data=paths.data, out=paths.out,
                                  train_data=run.train_data, config=run.compress)
    print(markdown_table(table))
