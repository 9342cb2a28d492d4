"""End-to-end query latency: text in -> top-10 results (with metadata) out, one query at a time.

Uses `Retriever` as `clipline search` and the server do: encoder and index
loaded once, then per query encode_text -> index search -> metadata lookup.
Either an existing index (`--index`, e.g. the 1M index left by index_bench.py,
with any `--checkpoint` of the same dimension), or one built here from a shard
dir (`--data`, default the emoji corpus) with `--checkpoint`. Reports median
and p99 over `--queries` distinct caption queries, and the split between
encoding and searching. Prints one JSON object.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clipline.commands.model_choice import ModelChoiceConfig, encoder_spec  # noqa: E402
from clipline.flags import parse_script_config  # noqa: E402
from retrieval.embed import EmbedConfig, embed_shards  # noqa: E402
from retrieval.encoder_spec import load_encoder  # noqa: E402
from retrieval.index.build import IndexBuildConfig, build_index  # noqa: E402
from retrieval.retriever import Retriever  # noqa: E402

TEMPLATES = ("{}", "a photo of {}", "an emoji of {}", "a drawing of a {}", "{} icon", "the {}")


def query_texts(retriever: Retriever, count: int) -> list[str]:
    """`count` distinct queries from the index's own captions under a few templates."""
    captions = sorted(set(retriever.metadata.table.column("caption").to_pylist()))
    texts = [t.format(c) for t in TEMPLATES for c in captions]
    if len(texts) < count:
        texts += [f"{texts[i % len(texts)]} number {i}" for i in range(count - len(texts))]
    rng = np.random.default_rng(0)
    return [texts[i] for i in rng.permutation(len(texts))[:count]]


def time_queries(retriever: Retriever, texts: list[str], k: int) -> dict:
    total, encode, search = [], [], []
    encoder = retriever.encoder
    for text in texts:
        start = time.perf_counter()
        vector = encoder.encode_text([text]).numpy()
        middle = time.perf_counter()
        results = retriever.search_embedding(vector, k)[0]
        end = time.perf_counter()
        assert len(results) == k
        total.append(end - start)
        encode.append(middle - start)
        search.append(end - middle)

    def ms(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)) * 1e3, 3)

    return {"latency_ms_median": ms(total, 50), "latency_ms_p99": ms(total, 99), "latency_ms_mean":
            round(float(np.mean(total)) * 1e3, 3), "encode_ms_median": ms(encode, 50), "encode_ms_p99": ms(encode, 99),
            "search_ms_median": ms(search, 50), "search_ms_p99": ms(search, 99), "queries": len(texts), "k": k}


def build_emoji_index(data: str, checkpoint: str, encoder, work: Path) -> Path:
    embed_shards(EmbedConfig(checkpoint=checkpoint, data=data, out=str(work / "emb"), batch_size=128),
                 encoder=encoder, log=lambda m: print(m, file=sys.stderr))
    build_index(IndexBuildConfig(emb=str(work / "emb"), out=str(work / "index"), overwrite=True),
                log=lambda m: print(m, file=sys.stderr))
    return work / "index"


@dataclass(kw_only=True)
class BenchConfig:
    """One query at a time against an index: text in, top-k with metadata out."""

    index: str | None = None
    """Existing index dir (else build one from --data)."""
    data: str = "/tmp/clipdata/emoji-train"
    """Shards to index."""
    encoder: ModelChoiceConfig = field(default_factory=lambda: ModelChoiceConfig(model="clip-tiny-64"))
    """Query encoder: --checkpoint RUN or --model NAME [--pretrained FILE] (default --model clip-tiny-64)."""
    queries: int = 1000
    """Queries timed."""
    k: int = 10
    """Results per query."""


def main() -> None:
    args = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/query_latency.py",
                        description=__doc__.splitlines()[0], flat=("encoder",))
    import torch

    checkpoint = encoder_spec(args.encoder)
    with tempfile.TemporaryDirectory() as work:
        encoder = load_encoder(checkpoint)
        index = Path(args.index) if args.index else build_emoji_index(args.data, checkpoint, encoder, Path(work))
        retriever = Retriever(index, encoder=encoder)
        texts = query_texts(retriever, args.queries)
        time_queries(retriever, texts[:20], args.k)  # warm-up: first calls allocate
        figures = time_queries(retriever, texts, args.k)
        report = {"benchmark": "query_latency", "index_size": len(retriever), "dim": retriever.dim,
                  "factory": retriever.loaded.summary["factory"], "params": retriever.loaded.summary["params"],
                  "checkpoint": checkpoint, "model": encoder.config.get("model_name"), **figures,
                  "environment": {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                                  "python": platform.python_version()}}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
