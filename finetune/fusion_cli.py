"""`clipline finetune fusion`: image+text classification with fusion heads, and its companions.

    clipline finetune fusion --checkpoint RUN --train-data DIR --eval-data DIR --out RUN2 \\
        --fusion gated --tasks category,subcategory [--towers frozen|last|full] [--task-weighting uncertainty]
    clipline finetune fusion heatmap --checkpoint RUN --data DIR --out DIR [--text "a red apple"] [--fusion-run RUN2]
    clipline finetune fusion compress --checkpoint RUN --data DIR [--train-data DIR] --out DIR

`finetune.cli` forwards its first word `fusion` here (with or without that word).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import ArgumentError, ArgumentParser

from data_tools.dataclass_flags import add_dataclass_flags, dataclass_from_namespace
from data_tools.errors import DataError
from finetune.errors import FinetuneError
from finetune.fusion.config import FusionConfig
from pretrain.errors import PretrainError

USER_ERRORS = (FinetuneError, PretrainError, DataError)


@dataclass(kw_only=True)
class FusionPaths:
    """Where the model and data come from and where the run goes."""

    checkpoint: str
    """Run dir (newest checkpoint) or checkpoint dir written by `clipline pretrain`."""
    train_data: str
    """Shards with image, caption and the --tasks label fields in each .json `labels`."""
    eval_data: str
    """Shards the final report is computed on (never used for training or model selection)."""
    out: str
    """Run directory for the classifier, report.json, metrics.jsonl and plots."""


@dataclass(kw_only=True)
class HeatmapCommand:
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
class CompressPaths:
    """Model, data and output of the compression table."""

    checkpoint: str
    """Run dir or checkpoint dir to compress."""
    data: str
    """Eval shards for zero-shot and retrieval quality and for timing."""
    out: str
    """Directory for compress.json, pruned/ (a checkpoint) and int8/."""
    train_data: str | None = None
    """Shards for the pruned model's recovery fine-tune (none: no recovery)."""


def _parser(prog: str, description: str, *classes: type) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    for cls in classes:
        add_dataclass_flags(parser, cls)
    return parser


def run_fusion(argv: list[str]) -> None:
    from finetune.fusion.run import train_fusion  # torch and the model code load after the flags parse

    namespace = _parser("clipline finetune fusion", "Train a fusion classifier on image+text pairs "
                        "(one or more label fields).", FusionPaths, FusionConfig).parse_args(argv)
    paths = dataclass_from_namespace(FusionPaths, namespace)
    train_fusion(checkpoint=paths.checkpoint, train_data=paths.train_data, eval_data=paths.eval_data,
                 out=paths.out, config=dataclass_from_namespace(FusionConfig, namespace))


def run_heatmap(argv: list[str]) -> None:
    cmd = dataclass_from_namespace(HeatmapCommand, _parser(
        "clipline finetune fusion heatmap", HeatmapCommand.__doc__, HeatmapCommand).parse_args(argv))
    from finetune.fusion.explain import explain_samples
    from evaluate.heatmap import METHODS, render_heatmaps
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
    from finetune.compress.table import CompressConfig, compression_table, markdown_table

    namespace = _parser("clipline finetune fusion compress", "Size, speed and quality of fp32, bf16, int8 "
                        "and pruned towers.", CompressPaths, CompressConfig).parse_args(argv)
    paths = dataclass_from_namespace(CompressPaths, namespace)
    table = compression_table(checkpoint=paths.checkpoint, data=paths.data, out=paths.out,
                              train_data=paths.train_data, config=dataclass_from_namespace(CompressConfig, namespace))
    print(markdown_table(table))


SUBCOMMANDS = {"heatmap": run_heatmap, "compress": run_compress}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fusion"]:
        argv = argv[1:]
    command = SUBCOMMANDS.get(argv[0]) if argv else None
    try:
        command(argv[1:]) if command else run_fusion(argv)
    except USER_ERRORS as err:
        fail(str(err))
    except ArgumentError as err:  # jsonargparse: one line, not a usage dump
        fail(f"{err} (see `clipline finetune fusion --help`)")


def fail(message: str) -> None:
    """Print a user error as one line on stderr and exit 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
