"""`clipline finetune fusion`: image+text classification with fusion heads, and its companions.

    clipline finetune fusion --checkpoint RUN --train-data DIR --eval-data DIR --out RUN2 \\
        --fusion gated --tasks category,subcategory [--towers frozen|last|full] [--task-weighting uncertainty]
    clipline finetune fusion heatmap --checkpoint RUN --data DIR --out DIR [--text "a red apple"] [--fusion-run RUN2]
    clipline finetune fusion compress --checkpoint RUN --data DIR [--train-data DIR] --out DIR

`clipline finetune` forwards its first word `fusion` here (with or without that word).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from clipline.commands.errors import reported_errors
from clipline.flags import parse_config
from finetune.compress_table import CompressConfig
from finetune.errors import FinetuneError
from finetune.fusion.config import FusionConfig


@dataclass(kw_only=True)
class FusionRunConfig:
    """Train a fusion classifier on image+text pairs (one or more label fields)."""

    checkpoint: str
    """Run dir (newest checkpoint) or checkpoint dir written by `clipline pretrain`."""
    train_data: str
    """Shards with image, caption and the --tasks label fields in each .json `labels`."""
    eval_data: str
    """Shards the final report is computed on (never used for training or model selection)."""
    out: str
    """Run directory for the classifier, report.json, metrics.jsonl and plots."""
    head: FusionConfig = field(default_factory=FusionConfig)
    """How to build and train the fusion classifier (flags without prefix)."""


@dataclass(kw_only=True)
class HeatmapConfig:
    """Heat maps of which image regions match a text, and a fusion head's gates / attention."""

    checkpoint: str
    """Run dir or checkpoint dir of the model whose patches are scored."""
    data: str
    """Shards; the first --count samples are shown."""
    out: str
    """Directory for heatmaps.png / heatmaps.json (and fusion_<i>.png with --fusion-run)."""
    text: str | None = None
    """Text to locate in every image; default: each sample's own caption."""
    count: int = 8
    """Samples to show."""
    method: str = "all"
    """value, tokens, gradcam, or all (one column each)."""
    fusion_run: str | None = None
    """A `clipline finetune fusion` run: also draw its gate values / attention weights per sample."""


@dataclass(kw_only=True)
class CompressRunConfig:
    """Size, speed and quality of fp32, bf16, int8 and pruned towers."""

    checkpoint: str
    """Run dir or checkpoint dir to compress."""
    data: str
    """Eval shards for zero-shot and retrieval quality and for timing."""
    out: str
    """Directory for compress.json, pruned/ (a checkpoint) and int8/."""
    train_data: str | None = None
    """Shards for the pruned model's recovery fine-tune (none: no recovery)."""
    compress: CompressConfig = field(default_factory=CompressConfig)
    """Which variants to build and how to measure them (flags without prefix)."""


def run_fusion(argv: list[str]) -> None:
    from finetune.fusion.run import train_fusion  # torch and the model code load after the flags parse

    run = parse_config(FusionRunConfig, argv, prog="clipline finetune fusion", flat=("head",))
    train_fusion(checkpoint=run.checkpoint, train_data=run.train_data, eval_data=run.eval_data, out=run.out,
                 config=run.head)


def run_heatmap(argv: list[str]) -> None:
    cmd = parse_config(HeatmapConfig, argv, prog="clipline finetune fusion heatmap")
    from finetune.fusion.explain import explain_samples
    from finetune.heatmap import METHODS, render_heatmaps
    from pretrain.encoder import Encoder

    if cmd.method != "all" and cmd.method not in METHODS:
        raise FinetuneError(f"unknown --method {cmd.method!r}; choose all or one of {', '.join(METHODS)}")
    methods = METHODS if cmd.method == "all" else (cmd.method,)
    out = Path(cmd.out)
    summary = render_heatmaps(Encoder.load(cmd.checkpoint), cmd.data, out, text=cmd.text, count=cmd.count,
                              methods=methods)
    print(f"heatmap: wrote {out / 'heatmaps.png'}; mean object focus {json.dumps(summary['mean_object_focus'])}")
    if cmd.fusion_run:
        explain_samples(cmd.fusion_run, cmd.data, out, count=cmd.count)
        print(f"heatmap: wrote {out}/fusion_*.png and fusion_explanations.json")


def run_compress(argv: list[str]) -> None:
    from finetune.compress_table import compression_table, markdown_table

    run = parse_config(CompressRunConfig, argv, prog="clipline finetune fusion compress", flat=("compress",))
    table = compression_table(checkpoint=run.checkpoint, data=run.data, out=run.out, train_data=run.train_data,
                              config=run.compress)
    print(markdown_table(table))


SUBCOMMANDS = {"heatmap": run_heatmap, "compress": run_compress}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fusion"]:
        argv = argv[1:]
    command = SUBCOMMANDS.get(argv[0]) if argv else None
    name = f"finetune fusion {argv[0]}" if command else "finetune fusion"
    with reported_errors(name):
        command(argv[1:]) if command else run_fusion(argv)


if __name__ == "__main__":
    main()
