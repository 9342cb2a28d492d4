"""`clipline compress`: size, speed and quality of a checkpoint's fp32, bf16, int8 and pruned towers.

    clipline compress --checkpoint RUN --data DIR [--train-data DIR] --out DIR [--variants fp32,bf16,int8,pruned]

Writes compress.json (and pruned/, int8/) in --out and prints the table as
markdown (`finetune.compress.table`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from jsonargparse import ArgumentError, ArgumentParser

from data_tools.dataclass_flags import add_dataclass_flags, dataclass_from_namespace
from data_tools.errors import DataError
from evaluate.errors import EvaluateError
from finetune.errors import FinetuneError
from pretrain.errors import PretrainError

USER_ERRORS = (EvaluateError, FinetuneError, PretrainError, DataError)


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


def build_parser() -> ArgumentParser:
    from finetune.compress.table import CompressConfig  # torch loads only when a command runs

    parser = ArgumentParser(prog="clipline compress", description="Size, speed and quality of fp32, bf16, int8 "
                            "and pruned towers.", exit_on_error=False)
    add_dataclass_flags(parser, CompressPaths)
    add_dataclass_flags(parser, CompressConfig)
    return parser


def run_compress(argv: list[str]) -> None:
    from finetune.compress.table import CompressConfig, compression_table, markdown_table

    namespace = build_parser().parse_args(argv)
    paths = dataclass_from_namespace(CompressPaths, namespace)
    table = compression_table(checkpoint=paths.checkpoint, data=paths.data, out=paths.out,
                              train_data=paths.train_data, config=dataclass_from_namespace(CompressConfig, namespace))
    print(markdown_table(table))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run_compress(argv)
    except USER_ERRORS as err:
        fail(str(err))
    except ArgumentError as err:  # jsonargparse: one line, not a usage dump
        fail(f"{err} (see `clipline compress --help`)")


def fail(message: str) -> None:
    """Print a user error as one line on stderr and exit 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
