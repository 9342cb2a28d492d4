"""`clipline index build EMB --out INDEX [--max-memory 2GB] [--target-recall 0.95]` (also `python -m retrieval index ...`).

Progress goes to stderr so that the JSON summary on stdout stays machine-readable.
"""

from __future__ import annotations

import json
import sys

from clipline.commands.errors import fail, reported_errors
from clipline.flags import parse_config
from retrieval.index.build import IndexBuildConfig

DESCRIPTION = ("Choose a FAISS index for the size and memory budget, train it, add the embeddings, tune "
               "nprobe/efSearch for the target recall@10, write INDEX.")
USAGE = """usage: clipline index build EMB --out INDEX [--max-memory 2GB] [--target-recall 0.95] [options]

  build    """ + DESCRIPTION + """

`clipline index build --help` lists every option."""


def main(argv: list[str] | None = None) -> None:
    from retrieval.index.build import build_index

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] != "build":
        fail(f"unknown index command {argv[0]!r}; use `clipline index build EMB --out INDEX`")
    with reported_errors("index build"):
        config = parse_config(IndexBuildConfig, argv[1:], prog="clipline index build", description=DESCRIPTION,
                              positional=("emb",), flat=("distributed",))
        print(json.dumps(build_index(config, log=lambda line: print(line, file=sys.stderr, flush=True)), indent=2))
