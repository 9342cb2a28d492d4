"""`Retriever`: an index dir + its encoder, loaded once, answering text / image / vector queries.

    r = Retriever("INDEX")                       # image index, encoder from info.json
    r.search_text(["a red apple"], k=10)          # -> [[{score, key, caption, shard, member, ...}, ...]]
    r.search_image(["query.png"], k=10)           # paths or PIL images
    r.search_embedding(vectors, k=10)             # (N, D) or (D,) float32

Over the image index a text query is text->image and an image query
image->image; over a text index (`modality="text"`) they are text->text and
image->text. Each result: `rank`, `id`, `score` (inner product for metric ip,
L2 distance for l2), `key`, `caption`, `label`, `source`, `shard` (absolute
tar path), `member`, `offset`, `size` (where its image bytes are), `image`
(`SHARD#MEMBER`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from retrieval.encoder_spec import load_encoder
from retrieval.errors import RetrievalError
from retrieval.index.store import load_index
from retrieval.metadata import MetadataTable
from retrieval.recorded_paths import recorded_checkpoint, recorded_path

if TYPE_CHECKING:
    from pretrain.encoder import Encoder

# the metadata a result carries, in its order (`shard` then made an absolute path)
RESULT_FIELDS = ("key", "caption", "label", "source", "shard", "member", "offset", "size")


class Retriever:
    """Search one modality's index of an index dir."""

    def __init__(self, index_dir: str | Path, *, modality: str | None = None, checkpoint: str | None = None,
                 data_dir: str | Path | None = None, encoder: Encoder | None = None, device: str = "cpu",
                 mmap: bool = True) -> None:
        self.loaded = loaded = load_index(index_dir, modality, mmap=mmap)
        self.index, self.modality = loaded.index, loaded.modality
        self.metadata = MetadataTable(sorted((loaded.root / "metadata").glob("part_*.parquet")))
        if len(self.metadata) != self.index.ntotal:
            raise RetrievalError(f"{loaded.root} has {len(self.metadata)} metadata rows for "
                                 f"{self.index.ntotal} vectors; rebuild the index")
        self.data_dir = Path(data_dir or recorded_path(loaded.info.get("data_dir"), loaded.root) or ".")
        self.checkpoint = checkpoint or recorded_checkpoint(loaded.info.get("checkpoint"), loaded.root)
        self.device = device
        self._encoder = encoder
        self._shard_paths: dict[str, str] = {}  # shard name -> absolute path, resolved once

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def encoder(self) -> Encoder:
        """The query encoder, loaded on first text/image query and checked against the index."""
        if self._encoder is None:
            if not self.checkpoint:
                raise RetrievalError("the index records no checkpoint; pass `checkpoint` RUN")
            self._encoder = load_encoder(self.checkpoint, self.device)
            expected = self.loaded.info.get("checkpoint_id")
            if expected and self._encoder.checkpoint_id != expected:
                raise RetrievalError(f"checkpoint {self.checkpoint!r} is not the one the index was embedded with "
                                     f"(id {self._encoder.checkpoint_id[:12]} vs {expected[:12]}); "
                                     "queries would land in another embedding space")
        if self._encoder.embed_dim != self.dim:
            raise RetrievalError(f"encoder embeds to dimension {self._encoder.embed_dim} but the index holds "
                                 f"dimension {self.dim}; use the checkpoint the index was built from")
        return self._encoder

    def search_text(self, texts: Sequence[str], k: int = 10) -> list[list[dict]]:
        if isinstance(texts, str):
            texts = [texts]
        if not texts or any(not t.strip() for t in texts):
            raise RetrievalError("empty text query; pass some words")
        vectors = self.encoder.encode_text(list(texts)).cpu().numpy()  # (N, D)
        return self.search_embedding(vectors, k)

    def search_image(self, images: Sequence[Image.Image | str | Path], k: int = 10) -> list[list[dict]]:
        import torch

        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        encoder = self.encoder
        batch = torch.stack([encoder.preprocess(_open_query_image(im)) for im in images])  # (N, 3, H, W)
        return self.search_embedding(encoder.encode_image(batch).cpu().numpy(), k)

    def search_embedding(self, vectors: np.ndarray, k: int = 10) -> list[list[dict]]:
        """Top-k results for each row of `vectors` ((N, D) or (D,))."""
        scores, ids = self._search(vectors, k)
        return [self._results(s, i) for s, i in zip(scores, ids)]

    def search_fields(self, vectors: np.ndarray, k: int, fields: Sequence[str]) -> list[list[dict]]:
        """Top-k of each row of (N, D) `vectors` as dicts of `score` (as `search_embedding` rounds it) and the
        metadata `fields` only: one metadata lookup for the whole batch. The server's text queries use
        this: looking up all columns per query cost ~60 us a query against ~3 us (12 queries a batch)."""
        scores, ids = self._search(vectors, k)
        keep = ids >= 0  # IVF may return < k hits
        rows = iter(self.metadata.rows(ids[keep].tolist(), fields))  # every row's kept hits, in order
        return [[{"score": round(float(score), 6), **next(rows)} for score, hit in zip(row_scores, row_keep) if hit]
                for row_scores, row_keep in zip(scores, keep)]

    def _search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (N, k), of (N, D) or (D,) `vectors`, checked against the index."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise RetrievalError(f"query vectors have shape {vectors.shape} but the index holds dimension "
                                 f"{self.dim}; embed queries with the index's checkpoint")
        if k <= 0:
            raise RetrievalError(f"-k must be at least 1, got {k}")
        if k > len(self):
            raise RetrievalError(f"-k {k} is larger than the index ({len(self)} items); ask for at most {len(self)}")
        return self.loaded.search(np.ascontiguousarray(vectors), k)

    def _results(self, scores: np.ndarray, ids: np.ndarray) -> list[dict]:
        found = [(float(s), int(i)) for s, i in zip(scores, ids) if i >= 0]  # IVF may return < k hits
        rows = self.metadata.rows([i for _, i in found], RESULT_FIELDS)
        results = []
        for rank, ((score, vid), row) in enumerate(zip(found, rows), 1):
            shard = self._shard_paths.get(row["shard"])
            if shard is None:
                shard = self._shard_paths.setdefault(row["shard"], str((self.data_dir / row["shard"]).resolve()))
            image = f"{shard}#{row['member']}"
            results.append({"rank": rank, "id": vid, "score": round(score, 6), **row, "shard": shard, "image": image})
        return results


def _open_query_image(image: Image.Image | str | Path) -> Image.Image:
    """An RGB image from a PIL image or a file path; RetrievalError if it does not decode."""
    from data_tools.image_ops import decode_image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RetrievalError(f"cannot read query image {path}: {err.strerror}") from err
    try:
        return decode_image(data, path.suffix.lstrip(".").lower() or None)
    except Image.DecompressionBombError as err:
        raise RetrievalError(f"query image {path} is too large to decode safely ({err.args[0].split(',')[0]}); "
                             "resize it first") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise RetrievalError(f"query image {path} does not decode as an image ({type(err).__name__}); "
                             "pass a JPEG, PNG or WebP file") from err
