"""CachedTokenizer gives exactly the tokenizer's rows, tokenizes each caption once, and stays bounded."""

from __future__ import annotations

import open_clip
import torch

from data_tools.token_cache import CachedTokenizer


def test_rows_equal_the_tokenizer_and_repeats_are_not_tokenized_again() -> None:
    tokenizer = open_clip.get_tokenizer("RN50")
    calls: list[list[str]] = []

    def counting(captions: list[str]) -> torch.Tensor:
        calls.append(captions)
        return tokenizer(captions)

    cached = CachedTokenizer(counting, max_captions=3)
    batch = ["a red heart", "a cat", "a red heart"]
    assert torch.equal(cached(batch), tokenizer(batch))
    assert calls == [["a red heart", "a cat"]]
    assert torch.equal(cached(["a cat", "a dog"]), tokenizer(["a cat", "a dog"]))
    assert calls[-1] == ["a dog"]
    cached(["a fish", "a bird"])  # over the cap: the least recently used captions go
    assert len(cached.rows) == 3 and "a red heart" not in cached.rows
