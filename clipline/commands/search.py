"""`clipline search INDEX (--text "..." | --image PATH) [-k 10] [--json]` (also `python -m retrieval search ...`).

Progress goes to stderr so that `--json` output on stdout stays machine-readable.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from clipline.commands.errors import reported_errors
from clipline.commands.model_choice import ModelChoiceConfig, encoder_spec
from clipline.flags import parse_config
from data_tools.output_paths import check_output_file
from retrieval.errors import RetrievalError


@dataclass(kw_only=True)
class SearchConfig:
    """Top-k items of an index for a text or an image query."""

    index: str
    """Index dir from `clipline index build`."""
    text: str | None = None
    """Text query."""
    image: str | None = None
    """Image file query."""
    k: int = 10
    """Number of results."""
    json: bool = False
    """Print results as JSON."""
    grid: str | None = None
    """Also draw the results into this PNG."""
    encoder: ModelChoiceConfig = field(default_factory=ModelChoiceConfig)
    """Query encoder: --checkpoint RUN or --model NAME [--pretrained FILE] (default: the one recorded in the
    index)."""
    modality: Literal["image", "text"] | None = None
    """Which of the index's sides to search (default: image)."""
    data: str | None = None
    """Shard dir, if it moved since embedding (images are read from it)."""
    device: str = "cpu"
    """Torch device for the query encoder."""


def run_search(config: SearchConfig) -> None:
    from retrieval.retriever import Retriever

    if (config.text is None) == (config.image is None):
        raise RetrievalError("pass exactly one of --text or --image")
    if config.grid:
        check_output_file(config.grid, create=False)
    retriever = Retriever(config.index, modality=config.modality,
                          checkpoint=encoder_spec(config.encoder, required=False), data_dir=config.data,
                          device=config.device)
    if config.text is not None:
        results = retriever.search_text([config.text], config.k)[0]
    else:
        results = retriever.search_image([config.image], config.k)[0]
    query = {"text": config.text} if config.text is not None else {"image": config.image}
    if config.grid:
        from retrieval.result_grid import save_result_grid

        asked = f'text "{config.text}"' if config.text is not None else f"image {Path(config.image).name}"
        save_result_grid(results, config.grid, title=f"{asked} -> {retriever.modality} index, top {config.k}")
        print(f"grid written to {config.grid}", file=sys.stderr, flush=True)
    if config.json:
        print(json.dumps({"query": query, "modality": retriever.modality, "k": config.k, "results": results},
                         ensure_ascii=False))
        return
    for r in results:
        print(f"{r['rank']:>3}  {r['score']:.4f}  {r['key']}  {r['caption']}  ({Path(r['shard']).name}:{r['member']})")


def main(argv: list[str] | None = None) -> None:
    with reported_errors("search"):
        run_search(parse_config(SearchConfig, argv, prog="clipline search", flat=("encoder",), positional=("index",),
                                short={"k": "-k"}))
