"""The `clipline` console script: dispatches a sub-command to its package's CLI.

Each package owns its command line (`python -m data_tools ...` works the same);
this module only maps the first word to the package entry point.
"""

from __future__ import annotations

import importlib
import sys

from clipline import __version__

# command word -> (module with a `main(argv)` function, words forwarded to it)
COMMANDS: dict[str, tuple[str, list[str]]] = {
    "data": ("data_tools.cli", []),
    "pretrain": ("pretrain.cli", []),
    "zeroshot": ("finetune.zeroshot_cli", []),
    "finetune": ("finetune.cli", []),
    "explain": ("finetune.explain_cli", []),
    "compress": ("finetune.compress_cli", []),
    "embed": ("retrieval.cli", ["embed"]),
    "index": ("retrieval.cli", ["index"]),
    "search": ("retrieval.cli", ["search"]),
    "serve": ("retrieval.serve_cli", []),
    "eval": ("retrieval.eval_cli", []),
}

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
        sys.exit(f"clipline: unknown command {word!r}; choose one of {', '.join(COMMANDS)}")
    module_name, prefix = COMMANDS[word]
    module = importlib.import_module(module_name)
    module.main(prefix + argv[1:])
