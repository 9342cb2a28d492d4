"""Embedding dirs written directly (no model), with vectors whose neighbours are known.

`clustered_vectors` draws unit vectors around a few hundred centres in a
low-dimensional subspace, like real embeddings (anisotropic, clustered), so an
approximate index has real work to do and exact search has a definite answer.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from retrieval.metadata import metadata_row, write_metadata


def clustered_vectors(n: int, dim: int, *, seed: int = 0, centres: int = 200, rank: int = 16,
                      spread: float = 0.35) -> np.ndarray:
    """(n, dim) float32 unit vectors around `centres` points of a `rank`-dim subspace."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:, :rank].astype(np.float32)  # (dim, rank)
    middle = rng.standard_normal((centres, rank)).astype(np.float32)
    latent = middle[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, rank)).astype(np.float32)
    vectors = latent @ basis.T + 0.05 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_embedding_dir(root: Path, image: np.ndarray, text: np.ndarray, *, parts: int = 2) -> Path:
    """An EMB dir in `clipline embed`'s layout, rows split evenly over `parts` parts, captions "item {row}"."""
    n, dim = image.shape
    for folder in ("img_emb", "text_emb", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    for p, (a, b) in enumerate(itertools.pairwise(bounds)):
        np.save(root / "img_emb" / f"part_{p:05d}.npy", image[a:b])
        np.save(root / "text_emb" / f"part_{p:05d}.npy", text[a:b])
        rows = [metadata_row(key=f"k{i:06d}", caption=f"item {i}", shard=f"{p:05d}.tar", member=f"k{i:06d}.jpg",
                             offset=-1, size=0, meta={"key": f"k{i:06d}"}) for i in range(a, b)]
        write_metadata(rows, root / "metadata" / f"part_{p:05d}.parquet")
    info = {"format": "clipline-embeddings/1", "checkpoint": None, "checkpoint_id": None, "dim": dim,
            "count": n, "data_dir": "/nonexistent"}
    (root / "info.json").write_text(json.dumps(info))
    return root
