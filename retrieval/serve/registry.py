"""The registry of served indices: each served by name, swappable atomically while queries run.

A `ServedIndex` holds one immutable `SearchBackend` snapshot. A query reads the
reference once and uses that snapshot to the end, so it sees the old index or
the new one, never a half-built one. Adding items builds a new snapshot off to
the side (the old one keeps answering), then replaces the reference in one
assignment, which is atomic in CPython.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Sequence

import numpy as np
from PIL import Image

from retrieval.embedding_store import Modality
from retrieval.errors import RetrievalError


@dataclass(frozen=True, kw_only=True)
class ImageLocation:
    """Where one stored image's bytes are: a tar member of one of the index's shards."""

    shard: Path
    """Absolute path of the shard tar (taken from the index metadata, never from a request)."""
    member: str
    """Name of the image member inside the tar (`KEY.jpg`)."""
    offset: int | None = None
    """Byte offset of the member's data in the tar, if the metadata recorded it."""
    size: int | None = None
    """Byte size of the member's data, if the metadata recorded it."""


class SearchBackend(Protocol):
    """One immutable index snapshot plus the encoder that turns queries into vectors."""

    embed_dim: int
    modalities: tuple[str, ...]

    def search_text(self, texts: list[str], k: int, modality: Modality) -> list[list[dict]]: ...
    def search_image(self, images: list[Image.Image], k: int, modality: Modality) -> list[list[dict]]: ...
    def search_embedding(self, vectors: np.ndarray, k: int, modality: Modality) -> list[list[dict]]: ...
    def image_location(self, key: str) -> ImageLocation | None: ...
    def has_key(self, key: str) -> bool: ...
    def describe(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...
    def with_added(self, items: AddedItems) -> SearchBackend: ...


@dataclass(frozen=True, kw_only=True)
class AddedItems:
    """New rows for an index: one embedding per side that the index holds."""

    keys: list[str]
    """Unique keys, none already in the index."""
    captions: list[str]
    """One caption per key."""
    image_embeddings: np.ndarray | None
    """(N, D) float32, L2-normalised; None if the index has no image side."""
    text_embeddings: np.ndarray | None
    """(N, D) float32, L2-normalised; None if the index has no text side."""


@dataclass(frozen=True)
class Snapshot:
    """What one query uses from start to end: a backend and the generation it belongs to."""

    backend: SearchBackend
    generation: int


class ServedIndex:
    """One named index: the current snapshot and the lock that serialises writers."""

    def __init__(self, name: str, backend: SearchBackend, source: str = "") -> None:
        self.name = name
        self.source = source
        self._snapshot = Snapshot(backend, 0)
        self.built_rows = len(backend)  # rows loaded from disk; the rest were added
        self._write_lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        """The current snapshot; read it once per query and keep using that object."""
        return self._snapshot

    @property
    def backend(self) -> SearchBackend:
        return self._snapshot.backend

    def add(self, items: AddedItems, max_added_rows: int | None = None) -> Snapshot:
        """Build the extended snapshot off to the side, then swap it in; returns the new snapshot.

        `max_added_rows` caps the rows all adds together may bring (AddLimitError past it).
        """
        with self._write_lock:  # two writers must not both extend the same old snapshot
            current = self._snapshot
            added = len(current.backend) - self.built_rows
            if max_added_rows is not None and added + len(items.keys) > max_added_rows:
                raise AddLimitError(f"index {self.name!r} already holds {added} added rows; {len(items.keys)} more "
                                    f"would pass the server's limit of {max_added_rows} (its `max_added_rows`); "
                                    "rebuild the index to keep more")
            duplicates = [k for k in items.keys if current.backend.has_key(k)]
            if duplicates:
                raise DuplicateKeyError(f"{len(duplicates)} key(s) already in index {self.name!r} "
                                        f"(first: {duplicates[0]!r}); use new keys")
            extended = Snapshot(current.backend.with_added(items), current.generation + 1)
            self._snapshot = extended  # the swap: one reference assignment
            return extended

    def describe(self) -> dict[str, Any]:
        snapshot = self._snapshot
        return {"name": self.name, "size": len(snapshot.backend), "embed_dim": snapshot.backend.embed_dim,
                "modalities": list(snapshot.backend.modalities), "generation": snapshot.generation,
                **snapshot.backend.describe()}


class IndexRegistry:
    """The indices a server answers for, by name; the first one is the default."""

    def __init__(self, indices: Sequence[ServedIndex]) -> None:
        if not indices:
            raise RetrievalError("no index to serve; pass at least one INDEX directory")
        self._by_name: dict[str, ServedIndex] = {}
        for served in indices:
            if served.name in self._by_name:
                raise RetrievalError(f"two indices are named {served.name!r}; give them distinct names (NAME=DIR)")
            self._by_name[served.name] = served
        self.default_name = indices[0].name

    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str | None) -> ServedIndex:
        """The index called `name` (the default one for None); RetrievalError if unknown."""
        if name is None:
            return self._by_name[self.default_name]
        served = self._by_name.get(name)
        if served is None:
            raise UnknownIndexError(f"no index named {name!r}; served: {', '.join(self._by_name)}")
        return served

    def __iter__(self):
        return iter(self._by_name.values())


class UnknownIndexError(RetrievalError):
    """A request named an index that this server does not serve (HTTP 404)."""


class UnknownKeyError(RetrievalError):
    """A request named a key that the index does not hold (HTTP 404)."""


class DuplicateKeyError(RetrievalError):
    """An add request reused a key the index already holds (HTTP 409)."""


class AddLimitError(RetrievalError):
    """An add request would pass the server's cap on added rows (HTTP 413)."""
