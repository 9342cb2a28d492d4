"""A least-recently-used cache of query-text embeddings, shared by every index served with one encoder.

Search traffic repeats itself (the same popular queries, a page re-sent, a
client retrying), and encoding a caption is most of what a text query costs
on a CPU: a cached text skips the encoder and costs only the index search.
Keys are the exact query strings; values are the encoder's L2-normalised
vectors, so a cached answer is the very vector a fresh encode would give.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np


class TextEmbeddingCache:
    """Thread-safe LRU of text -> (D,) float32 vector; `capacity` 0 turns it off."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._vectors)

    def encode(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """(Q, D) vectors of `texts`: cached ones looked up, the rest encoded in one call and remembered."""
        if self.capacity == 0:
            return np.ascontiguousarray(encode(list(texts)), dtype=np.float32)
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                vector = self._vectors.get(text)
                if vector is not None:
                    self._vectors.move_to_end(text)
                    found[text] = vector
            missing = list(dict.fromkeys(t for t in texts if t not in found))  # each distinct text encoded once
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            fresh = np.ascontiguousarray(encode(missing), dtype=np.float32)  # (M, D), outside the lock
            with self._lock:
                for text, vector in zip(missing, fresh):
                    vector.flags.writeable = False  # shared between requests
                    self._vectors[text] = vector
                    self._vectors.move_to_end(text)
                    found[text] = vector
                while len(self._vectors) > self.capacity:
                    self._vectors.popitem(last=False)
        return np.stack([found[t] for t in texts])  # (Q, D)

    def stats(self) -> dict[str, int]:
        return {"size": len(self._vectors), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}
