"""The `clipline` console script: dispatches a sub-command to its entry point in clipline.commands.

`python -m data_tools ...` and the other packages' `__main__` reach the same
entry points; this module only maps the first word to one.
"""

from __future__ import annotations

import importlib
import sys

from clipline import __version__
from clipline.commands.errors import fail

# command words: clipline.commands.WORD has its `main(argv)` (imported on use: each loads its own libraries)
COMMANDS: list[str] = "data pretrain zeroshot finetune explain compress embed index search serve eval".split()

USAGE = """usage: clipline COMMAND [ARGS ...]

commands:
  data       build, inspect and validate WebDataset shards
  pretrain   contrastive pretraining of a two-tower model
  zeroshot   zero-shot classification report for a checkpoint
  finetune   few-shot adapters, probes, fusion heads
  explain    heat maps of where an image matches a text; a fusion head's gates / attention
  compress   size, speed and quality of bf16, int8 and pruned towers
  embed      embed shards with a checkpoint
  index      build a FAISS index from embeddings
  search     query an index with text or an image
  serve      HTTP search API and web page
  eval       evaluation suites (eval retrieval ...)

`clipline COMMAND --help` describes each command."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] in ("-V", "--version"):
        print(f"clipline {__version__}")
        return
    word = argv[0]
    if word not in COMMANDS:
        fail(f"unknown command {word!r}; choose one of {', '.join(COMMANDS)} (see `clipline --help`)")
    importlib.import_module(f"clipline.commands.{word}").main(argv[1:])
