"""The real `SearchBackend`: an index dir's `Retriever`s (one per side) plus rows added while serving.

The built index stays immutable (memory-mapped read-only). Rows added while
serving go to a small exact "delta" index; a search asks both and merges the
two top-k lists. Adding copies only the delta, so building the next snapshot
costs O(added rows), never a copy of a million-vector index, and the old
snapshot keeps answering until the new one is swapped in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from PIL import Image

from pretrain.precision import Precision, autocast, encoder_device, resolve_precision
from retrieval.encoder_spec import load_encoder
from retrieval.errors import RetrievalError
from retrieval.index.store import read_index_info
from retrieval.recorded_paths import recorded_checkpoint
from retrieval.retriever import Retriever
from retrieval.serve.packed_text import encode_texts_packed, packed_layers, supports_packing
from retrieval.serve.query_encoder import prepare_query_encoder
from retrieval.serve.registry import AddedItems, ImageLocation, IndexRegistry, ServedIndex
from retrieval.serve.text_cache import TextEmbeddingCache

HIT_FIELDS = ("key", "caption", "member")  # the metadata a hit needs (`_hit`)
TEXT_CACHE_SIZE = 4096  # distinct query texts remembered per encoder (1.5 KB each at 384 dims)


@dataclass(frozen=True)
class DeltaRows:
    """Rows added since start: an exact index per side plus their keys and captions."""

    keys: tuple[str, ...]
    captions: tuple[str, ...]
    indices: dict[str, faiss.Index]

    def extended(self, items: AddedItems) -> DeltaRows:
        """A new delta with `items` appended; this one stays untouched for the queries using it."""
        indices = {}
        for modality, index in self.indices.items():
            vectors = items.image_embeddings if modality == "image" else items.text_embeddings
            copy = faiss.clone_index(index)
            copy.add(np.ascontiguousarray(vectors, dtype=np.float32))
            indices[modality] = copy
        return DeltaRows(self.keys + tuple(items.keys), self.captions + tuple(items.captions), indices)


class IndexBackend:
    """Searches one index dir (every side it was built with) and its delta; immutable once built."""

    def __init__(self, retrievers: dict[str, Retriever], info: dict, delta: DeltaRows | None = None,
                 text_cache: TextEmbeddingCache | None = None, precision: Precision = "fp32") -> None:
        self.retrievers = retrievers
        self.info = info
        self.modalities = tuple(retrievers)
        self._first = first = next(iter(retrievers.values()))
        self.encoder = first.encoder
        self.embed_dim = first.dim
        self.base_count = len(first)
        self.metric = info.get("metric", "ip")
        self.delta = delta or DeltaRows((), (), {m: faiss.IndexFlatIP(self.embed_dim) for m in self.modalities})
        self._delta_keys = frozenset(self.delta.keys)
        self.text_cache = text_cache if text_cache is not None else TextEmbeddingCache(0)
        self.precision = precision  # of the query encoders: bf16 autocast where chosen, as `clipline embed` runs
        self.compute = autocast(precision, encoder_device(self.encoder))
        model = getattr(self.encoder, "model", None)  # test doubles have none
        self.packed_text = isinstance(model, torch.nn.Module) and supports_packing(model)
        if self.packed_text:
            packed_layers()  # compiled now, not by the first queries

    def __len__(self) -> int:
        return self.base_count + len(self.delta.keys)

    def search_text(self, texts: list[str], k: int, modality: str) -> list[list[dict]]:
        vectors = self.text_cache.encode(texts, self._encode_texts)  # (Q, D)
        return self.search_embedding(vectors, k, modality)

    def search_image(self, images: list[Image.Image], k: int, modality: str) -> list[list[dict]]:
        batch = torch.stack([self.encoder.preprocess(image) for image in images])  # (Q, 3, H, W)
        with self.compute():
            vectors = self.encoder.encode_image(batch).float().cpu().numpy()  # (Q, D)
        return self.search_embedding(vectors, k, modality)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        with self.compute():
            if self.packed_text:  # the same vectors without the padding rows' compute (packed_text.py)
                return encode_texts_packed(self.encoder, texts).cpu().numpy()  # (Q, D)
            return self.encoder.encode_text(texts).float().cpu().numpy()  # (Q, D)

    def search_embedding(self, vectors: np.ndarray, k: int, modality: str) -> list[list[dict]]:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (Q, D)
        base = self.retrievers[modality].search_fields(vectors, min(k, self.base_count), HIT_FIELDS)
        hits = [[_hit(row) for row in rows] for rows in base]
        if not self.delta.keys:
            return hits
        scores, ids = self.delta.indices[modality].search(vectors, min(k, len(self.delta.keys)))
        for query_hits, row_scores, row_ids in zip(hits, scores, ids):
            query_hits += [{"key": self.delta.keys[i], "caption": self.delta.captions[i], "score": float(s),
                            "has_image": False} for s, i in zip(row_scores, row_ids) if i >= 0]
            query_hits.sort(key=lambda hit: -hit["score"])  # stable: base rows win ties
            del query_hits[k:]
        return hits

    def has_key(self, key: str) -> bool:
        return key in self._delta_keys or self._first.metadata.id_of(key) is not None

    def image_location(self, key: str) -> ImageLocation | None:
        """Where the image of `key` is, from the index metadata; None for unknown keys or paths outside the data."""
        retriever = self._first
        row_id = retriever.metadata.id_of(key)
        if row_id is None:
            return None
        row = retriever.metadata.rows([row_id])[0]
        if not row["member"]:
            return None
        data_dir = retriever.data_dir.resolve()
        shard = (data_dir / row["shard"]).resolve()
        # The metadata is the operator's, but even a rewritten parquet must not reach other files.
        if shard.suffix != ".tar" or not shard.is_relative_to(data_dir):
            return None
        offset, size = int(row["offset"]), int(row["size"])
        return ImageLocation(shard=shard, member=row["member"], offset=offset if offset >= 0 else None,
                             size=size if offset >= 0 else None)

    def describe(self) -> dict[str, Any]:
        return {"added": len(self.delta.keys),
                "factory": {m: r.loaded.summary.get("factory") for m, r in self.retrievers.items()},
                "checkpoint_id": self.info.get("checkpoint_id")}

    def with_added(self, items: AddedItems) -> IndexBackend:
        if self.metric != "ip":
            raise RetrievalError(f"adding to an index built with metric {self.metric!r} is not supported; "
                                 "rebuild it with `clipline index build --metric ip`")
        return IndexBackend(self.retrievers, self.info, self.delta.extended(items), self.text_cache, self.precision)


def _hit(row: dict) -> dict:
    return {"key": row["key"], "caption": row["caption"], "score": row["score"], "has_image": bool(row["member"])}


def load_backend(root: Path, loaded: dict[str, tuple[Any, TextEmbeddingCache]], checkpoint: str | None,
                 text_cache_size: int, precision: str) -> IndexBackend:
    """Open every side of the index dir; indices built with one checkpoint share one encoder and text cache
    (`loaded`: checkpoint spec -> both, filled on first use)."""
    info, _ = read_index_info(root)
    spec = checkpoint or recorded_checkpoint(info.get("checkpoint"), root)
    if not spec:
        raise RetrievalError(f"{root}/info.json names no checkpoint; pass `checkpoint` RUN")
    if spec not in loaded:
        encoder = load_encoder(spec)
        prepare_query_encoder(encoder, resolve_precision(encoder, precision))
        loaded[spec] = encoder, TextEmbeddingCache(text_cache_size)
    encoder, cache = loaded[spec]
    expected = info.get("checkpoint_id")
    if checkpoint is None and expected and encoder.checkpoint_id != expected:
        raise RetrievalError(f"checkpoint {spec!r} is not the one {root} was embedded with; queries would land "
                             "in another embedding space (pass `checkpoint` with the right run)")
    retrievers = {m: Retriever(root, modality=m, checkpoint=spec, encoder=encoder) for m in info["modalities"]}
    if encoder.embed_dim != int(info["dim"]):
        raise RetrievalError(f"checkpoint {spec!r} makes {encoder.embed_dim}-d embeddings but {root} holds "
                             f"{info['dim']}-d ones; serve it with the checkpoint it was built from")
    return IndexBackend(retrievers, info, text_cache=cache, precision=resolve_precision(encoder, precision))


def load_registry(named: list[tuple[str, Path]], checkpoint: str | None = None,
                  text_cache_size: int = TEXT_CACHE_SIZE, precision: str = "fp32") -> IndexRegistry:
    """Load each (name, index dir) once, in order; the first is the default index."""
    loaded: dict[str, tuple[Any, TextEmbeddingCache]] = {}
    served = [ServedIndex(name, load_backend(Path(root), loaded, checkpoint, text_cache_size, precision),
                          source=str(root))
              for name, root in named]
    return IndexRegistry(served)
