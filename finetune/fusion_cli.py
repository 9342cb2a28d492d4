"""`clipline finetune fusion`: image+text classification with fusion heads.

    clipline finetune fusion --checkpoint RUN --train-data DIR --eval-data DIR --out RUN2 \\
        --fusion gated --tasks category,subcategory [--towers frozen|last|full] [--task-weighting uncertainty]

`finetune.cli` forwards its first word `fusion` here (with or without that word).
The old spellings `clipline finetune fusion heatmap|compress` still work for one
release, with a notice: they are `clipline explain` and `clipline compress` now.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

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


RENAMED = {"heatmap": ("explain", "finetune.explain_cli"), "compress": ("compress", "finetune.compress_cli")}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fusion"]:
        argv = argv[1:]
    if argv and argv[0] in RENAMED:
        forward_renamed(argv[0], argv[1:])
        return
    try:
        run_fusion(argv)
    except USER_ERRORS as err:
        fail(str(err))
    except ArgumentError as err:  # jsonargparse: one line, not a usage dump
        fail(f"{err} (see `clipline finetune fusion --help`)")


def forward_renamed(word: str, argv: list[str]) -> None:
    """The old spelling `clipline finetune fusion heatmap|compress`: a one-line notice, then the new command."""
    new_word, module = RENAMED[word]
    print(f"note: `clipline finetune fusion {word}` is now `clipline {new_word}`; the old spelling will be "
          "removed in the next release", file=sys.stderr)
    importlib.import_module(module).main(argv)


def fail(message: str) -> None:
    """Print a user error as one line on stderr and exit 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
