"""The query-text embedding cache: same vectors as a fresh encode, each distinct text encoded once, LRU order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.serve.backend import load_registry
from retrieval.serve.text_cache import TextEmbeddingCache


class CountingEncoder:
    """Deterministic 4-d 'embeddings' of texts; records every batch it is asked to encode."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = [[len(t), ord(t[0]), ord(t[-1]), 1.0] for t in texts]
        return np.array(rows, dtype=np.float32)


def test_repeated_texts_are_encoded_once_and_answered_identically() -> None:
    encode, cache = CountingEncoder(), TextEmbeddingCache(8)
    first = cache.encode(["cat", "dog", "cat"], encode)
    again = cache.encode(["dog", "cat", "owl"], encode)
    assert encode.calls == [["cat", "dog"], ["owl"]]  # duplicates within and across batches skipped
    np.testing.assert_array_equal(first, encode(["cat", "dog", "cat"]))
    np.testing.assert_array_equal(again, encode(["dog", "cat", "owl"]))
    assert cache.stats() == {"size": 3, "capacity": 8, "hits": 3, "misses": 3}


def test_least_recently_used_text_is_dropped_first() -> None:
    encode, cache = CountingEncoder(), TextEmbeddingCache(2)
    cache.encode(["a"], encode)
    cache.encode(["b"], encode)
    cache.encode(["a"], encode)  # a is now the most recent
    cache.encode(["c"], encode)  # evicts b
    encode.calls.clear()
    cache.encode(["a", "c", "b"], encode)
    assert encode.calls == [["b"]] and len(cache) == 2


def test_capacity_zero_always_encodes() -> None:
    encode, cache = CountingEncoder(), TextEmbeddingCache(0)
    cache.encode(["x"], encode)
    cache.encode(["x"], encode)
    assert encode.calls == [["x"], ["x"]] and len(cache) == 0
    with pytest.raises(ValueError):
        TextEmbeddingCache(-1)


def test_served_indices_share_one_cache_and_cached_answers_match(emoji_index: Path) -> None:
    registry = load_registry([("emoji", emoji_index), ("again", emoji_index)], text_cache_size=16)
    first, second = (served.backend for served in registry)
    assert first.text_cache is second.text_cache
    fresh = first.search_text(["grinning face"], 5, "image")[0]
    cached = second.search_text(["grinning face"], 5, "image")[0]
    assert [h["key"] for h in cached] == [h["key"] for h in fresh]
    assert [h["score"] for h in cached] == pytest.approx([h["score"] for h in fresh], abs=1e-6)
    assert first.text_cache.stats()["hits"] == 1 and first.text_cache.stats()["misses"] == 1
    off = load_registry([("emoji", emoji_index)], text_cache_size=0)
    assert [h["key"] for h in next(iter(off)).backend.search_text(["grinning face"], 5, "image")[0]] == \
        [h["key"] for h in fresh]
