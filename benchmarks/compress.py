"""Compression table: fp32 vs bf16 vs int8 (dynamic) vs magnitude-pruned towers, on one machine, one run.

    python benchmarks/compress.py --checkpoint RUN --data EVAL_DIR [--train-data DIR] [--label-field category]

Size (bytes of the saved state dict), encode images/s (same preprocessed batch,
variants timed back to back, best of three passes), zero-shot top-1 / macro-F1 and
image<->text R@1 on the same eval shards; deltas against fp32. The pruned
model gets --recovery-steps of fine-tuning on --train-data first. Prints one
JSON object (with CPU flags and versions). Never asserts on time.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch

from clipline.flags import parse_script_config
from finetune.compress.table import CompressConfig, compression_table, markdown_table
from figures import print_figures  # benchmarks/figures.py (this script's folder is on sys.path)
from machine import machine_info  # benchmarks/machine.py


@dataclass(kw_only=True)
class BenchConfig:
    """Model and data of the compression benchmark, and the compression settings."""

    checkpoint: str
    """clipline run or checkpoint dir."""
    data: str
    """Eval shards (zero-shot labels + captions)."""
    train_data: str | None = None
    """Shards for the pruned model's recovery fine-tune."""
    out: str | None = None
    """Keep the compressed models and compress.json here (default: a temporary dir)."""
    threads: int = 0
    """torch threads for the timing (0: torch's default)."""
    compress: CompressConfig = field(default_factory=CompressConfig)
    """Which variants to build and how to measure them (flags without prefix)."""


def main() -> None:
    paths = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/compress.py",
                         description=__doc__.splitlines()[0], flat=("compress",))
    if paths.threads:
        torch.set_num_threads(paths.threads)
    with tempfile.TemporaryDirectory(prefix="compress-bench-") as tmp:
        table = compression_table(checkpoint=paths.checkpoint, data=paths.data, train_data=paths.train_data,
                                  out=paths.out or tmp, config=paths.compress,
                                  log=lambda line: print(line, file=sys.stderr, flush=True))  # stdout: the JSON
    result: dict[str, Any] = {
        "benchmark": "compress",
        "environment": machine_info(("torch", "open_clip_torch"), threads=torch.get_num_threads()),
        **table,
        "markdown": markdown_table(table),
    }
    print_figures(result, indent=1)


if __name__ == "__main__":
    main()
