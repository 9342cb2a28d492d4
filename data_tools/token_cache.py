"""Tokenize captions once: a many-epoch run over a small corpus sees the same few thousand captions again
and again, and a fast HF tokenizer still spends ~7 ms of Python per 128 captions on this CPU."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

DEFAULT_MAX_CAPTIONS = 100_000  # ~60 MB of 77-token int64 rows


class CachedTokenizer:
    """`tokenize(captions) -> (B, L)` with each caption's row memoised (least recently used dropped first)."""

    def __init__(self, tokenize: Callable[[list[str]], torch.Tensor], max_captions: int = DEFAULT_MAX_CAPTIONS) -> None:
        self.tokenize, self.max_captions = tokenize, max_captions
        self.rows: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(c for c in captions if c not in self.rows))
        if missing:
            self.rows.update(zip(missing, self.tokenize(missing)))
        for caption in captions:
            self.rows.move_to_end(caption)
        tokens = torch.stack([self.rows[c] for c in captions])  # (B, L)
        while len(self.rows) > self.max_captions:
            self.rows.popitem(last=False)
        return tokens
