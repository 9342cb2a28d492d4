"""`clipline embed | index build | search` (and `python -m retrieval ...`).

`serve` and `eval` are forwarded to `retrieval.serve_cli` and `retrieval.eval_cli`.
Progress goes to stderr so that `--json` output on stdout stays machine-readable.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from data_tools.dataclass_flags import add_dataclass_flags, dataclass_from_namespace
from data_tools.errors import DataError
from pretrain.errors import PretrainError
from retrieval.embed import EmbedConfig
from retrieval.errors import RetrievalError
from retrieval.index.build import IndexBuildConfig

EXIT_USER_ERROR = 2
FORWARDED = {"serve": "retrieval.serve_cli", "eval": "retrieval.eval_cli"}
USAGE = """usage: clipline {embed,index,search,serve,eval} ...

  embed --checkpoint RUN --data DIR --out EMB     embed shards (image + text)
  index build EMB --out INDEX                      build and tune a FAISS index
  search INDEX (--text "..." | --image PATH)       query an index
  serve INDEX                                      HTTP API and web page
  eval retrieval --checkpoint RUN --data DIR       caption<->image recall report"""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _embed_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="clipline embed", exit_on_error=False,
                            description="Embed every sample of a shard dir: img_emb/, text_emb/, metadata/ parts "
                                        "(one per shard, resumable) and info.json.")
    add_dataclass_flags(parser, EmbedConfig)
    return parser


def _index_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="clipline index build", exit_on_error=False,
                            description="Choose a FAISS index for the size and memory budget, train it, add the "
                                        "embeddings, tune nprobe/efSearch for the target recall@10, write INDEX.")
    parser.add_argument("emb", type=str, help="embedding dir from `clipline embed`")
    add_dataclass_flags(parser, IndexBuildConfig, exclude=("emb",))
    return parser


def _search_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="clipline search", exit_on_error=False,
                            description="Top-k items of an index for a text or an image query.")
    parser.add_argument("index", type=str, help="index dir from `clipline index build`")
    parser.add_argument("--text", type=str | None, default=None, help="text query")
    parser.add_argument("--image", type=str | None, default=None, help="image file query")
    parser.add_argument("-k", "--k", type=int, default=10, help="number of results")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--grid", type=str | None, default=None, help="also draw the results into this PNG")
    parser.add_argument("--checkpoint", type=str | None, default=None,
                        help="query encoder (default: the checkpoint recorded in the index)")
    parser.add_argument("--modality", type=Literal["image", "text"] | None, default=None,
                        help="which of the index's sides to search (default: image)")
    parser.add_argument("--data", type=str | None, default=None,
                        help="shard dir, if it moved since embedding (images are read from it)")
    parser.add_argument("--device", type=str, default="cpu", help="torch device for the query encoder")
    return parser


def run_embed(args: Namespace) -> None:
    from retrieval.embed import embed_shards

    info = embed_shards(dataclass_from_namespace(EmbedConfig, args), log=_log)
    if info:
        print(json.dumps(info))


def run_index_build(args: Namespace) -> None:
    from retrieval.index.build import build_index

    fields = {f.name: args[f.name] for f in dataclasses.fields(IndexBuildConfig) if f.name != "emb"}
    print(json.dumps(build_index(IndexBuildConfig(emb=args.emb, **fields), log=_log), indent=2))


def run_search(args: Namespace) -> None:
    from retrieval.retriever import Retriever

    if (args.text is None) == (args.image is None):
        raise RetrievalError("pass exactly one of --text or --image")
    retriever = Retriever(args.index, modality=args.modality, checkpoint=args.checkpoint, data_dir=args.data,
                          device=args.device)
    if args.text is not None:
        results = retriever.search_text([args.text], args.k)[0]
    else:
        results = retriever.search_image([args.image], args.k)[0]
    query = {"text": args.text} if args.text is not None else {"image": args.image}
    if args.grid:
        from retrieval.result_grid import save_result_grid

        asked = f'text "{args.text}"' if args.text is not None else f"image {Path(args.image).name}"
        save_result_grid(results, args.grid, title=f"{asked} -> {retriever.modality} index, top {args.k}")
        _log(f"grid written to {args.grid}")
    if args.json:
        print(json.dumps({"query": query, "modality": retriever.modality, "k": args.k, "results": results},
                         ensure_ascii=False))
        return
    for r in results:
        print(f"{r['rank']:>3}  {r['score']:.4f}  {r['key']}  {r['caption']}  ({Path(r['shard']).name}:{r['member']})")


COMMANDS = {"embed": (_embed_parser, run_embed), "index": (_index_parser, run_index_build),
            "search": (_search_parser, run_search)}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    word, rest = argv[0], argv[1:]
    if word in FORWARDED:
        importlib.import_module(FORWARDED[word]).main(rest)
        return
    if word not in COMMANDS:
        _fail(f"unknown command {word!r}; choose one of embed, index, search, serve, eval")
    if word == "index":
        if not rest or rest[0] in ("-h", "--help"):
            _index_parser().print_help()
            return
        if rest[0] != "build":
            _fail(f"unknown index command {rest[0]!r}; use `clipline index build EMB --out INDEX`")
        rest = rest[1:]
    make_parser, run = COMMANDS[word]
    try:
        args = make_parser().parse_args(rest)
    except Exception as exc:  # jsonargparse raises ArgumentError and friends: one line, not a usage dump
        _fail(f"{' '.join(str(exc).split())} (see `clipline {word} --help`)")
    try:
        run(args)
    except (RetrievalError, DataError, PretrainError) as exc:  # the loader and encoder raise their own
        _fail(str(exc))


def _fail(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
