"""Read an embedding directory written by `clipline embed`.

Layout (one part per shard, rows aligned across the three folders):

    EMB/img_emb/part_00000.npy      (N, D) float32 or float16, L2-normalised
    EMB/text_emb/part_00000.npy     (N, D)
    EMB/metadata/part_00000.parquet N rows: key, caption, shard, member, offset, ...
    EMB/info.json                   checkpoint, dim, count, data dir

A part counts once its metadata file exists: `clipline embed` writes it last.
Row `i` of the concatenated parts is id `i` in every index built from them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from retrieval.errors import RetrievalError

Modality = Literal["image", "text"]
MODALITY_DIRS: dict[str, str] = {"image": "img_emb", "text": "text_emb"}


class EmbeddingSet:
    """The complete parts of an embedding dir, opened memory-mapped."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise RetrievalError(f"embedding dir {self.root} does not exist; run `clipline embed` first")
        self.parts = sorted(p.stem for p in (self.root / "metadata").glob("part_*.parquet"))
        if not self.parts:
            raise RetrievalError(f"embedding dir {self.root} has no parts (metadata/part_*.parquet); "
                                 "run `clipline embed --out` on it first")
        info_path = self.root / "info.json"
        self.info: dict = json.loads(info_path.read_text()) if info_path.is_file() else {}
        self.part_rows = [self._part_rows(part) for part in self.parts]  # rows of each part, in part order
        self.count = int(sum(self.part_rows))
        self.dim = self._check_dims()

    def modalities(self) -> list[str]:
        """Modalities present for every part."""
        return [m for m, d in MODALITY_DIRS.items() if all((self.root / d / f"{p}.npy").is_file() for p in self.parts)]

    def part_array(self, modality: Modality, part: str) -> np.ndarray:
        """One part's (N, D) array, memory-mapped, in its stored dtype."""
        path = self.root / MODALITY_DIRS[modality] / f"{part}.npy"
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise RetrievalError(f"cannot read {path} ({err}); delete it and rerun `clipline embed`") from err

    def batches(self, modality: Modality, batch_size: int = 65536) -> Iterator[np.ndarray]:
        """(B, D) float32 batches in id order; memory stays at one batch."""
        for part in self.parts:
            yield from self.part_batches(modality, part, batch_size)

    def part_batches(self, modality: Modality, part: str, batch_size: int = 65536) -> Iterator[np.ndarray]:
        """(B, D) float32 batches of one part, in row order."""
        array = self.part_array(modality, part)
        for start in range(0, len(array), batch_size):
            batch = np.ascontiguousarray(array[start : start + batch_size], dtype=np.float32)
            if not np.isfinite(batch).all():
                raise RetrievalError(f"{modality} embeddings in part {part} contain NaN or inf; re-embed that shard")
            yield batch

    def rows(self, modality: Modality, ids: np.ndarray) -> np.ndarray:
        """(len(ids), D) float32 rows for global ids (any order)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        bounds = np.cumsum([0, *self.part_rows])
        part_of = np.searchsorted(bounds, ids, side="right") - 1
        for p in np.unique(part_of):
            chosen = np.nonzero(part_of == p)[0]
            array = self.part_array(modality, self.parts[p])
            out[chosen] = array[ids[chosen] - bounds[p]]
        return out

    def metadata_files(self) -> list[Path]:
        return [self.root / "metadata" / f"{part}.parquet" for part in self.parts]

    def _part_rows(self, part: str) -> int:
        import pyarrow.parquet as pq  # deferred: pyarrow import costs ~0.3 s

        path = self.root / "metadata" / f"{part}.parquet"
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except (OSError, ValueError) as err:
            raise RetrievalError(f"cannot read {path} ({err}); delete it and rerun `clipline embed`") from err

    def _check_dims(self) -> int:
        """The common dimension; raises when parts disagree with each other or with their row counts."""
        present = self.modalities()
        if not present:
            raise RetrievalError(f"embedding dir {self.root} has metadata but no img_emb/ or text_emb/ arrays for "
                                 "every part; rerun `clipline embed`")
        dims = set()
        for modality in present:
            for part, rows in zip(self.parts, self.part_rows):
                array = self.part_array(modality, part)
                if array.ndim != 2 or len(array) != rows:
                    raise RetrievalError(f"{MODALITY_DIRS[modality]}/{part}.npy has shape {array.shape} but its "
                                         f"metadata has {rows} rows; delete the part and rerun `clipline embed`")
                dims.add(array.shape[1])
        if len(dims) != 1:
            raise RetrievalError(f"embedding dir {self.root} mixes dimensions {sorted(dims)}; "
                                 "embed everything with one checkpoint into a fresh embedding dir")
        return dims.pop()
