"""Tower outputs computed once, for training heads on frozen towers.

With frozen towers every epoch would recompute the same features; caching them
makes an epoch of head training cost milliseconds instead of a pass through
both towers. Token sequences (attention fusion) are kept in bfloat16 to halve
their memory; pooled features stay float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from finetune.fusion.model import FusionClassifier

TOKEN_KEYS = ("image_tokens", "text_tokens")


class FeatureCache:
    """Encoded inputs (N, ...) and targets (N, T) of a whole split, on CPU."""

    def __init__(self, encoded: dict[str, Tensor], targets: Tensor, captions: list[str], keys: list[str],
                 split_ids: list[str]) -> None:
        self.encoded, self.targets, self.captions, self.keys = encoded, targets, captions, keys
        self.split_ids = split_ids

    def __len__(self) -> int:
        return len(self.targets)

    @classmethod
    @torch.no_grad()
    def build(cls, model: FusionClassifier, batches: Iterable[dict]) -> FeatureCache:
        """Run the towers over `batches` (`LabelledBatches` dicts) in eval mode."""
        was_training = model.towers.training
        model.towers.eval()
        parts: dict[str, list[Tensor]] = {}
        targets, captions, keys, split_ids = [], [], [], []
        for batch in batches:
            encoded = model.encode(batch["image"], batch["text"])
            for name, value in encoded.items():
                parts.setdefault(name, []).append(value.to(torch.bfloat16) if name in TOKEN_KEYS else value)
            targets.append(batch["targets"])
            captions += batch["caption"]
            keys += batch["key"]
            split_ids += batch["split_id"]
        model.towers.train(was_training)
        encoded = {name: _cat_padded(values) for name, values in parts.items()}
        if "text_mask" in encoded:  # drop the all-padding tail of the context: most of its length
            used = encoded["text_mask"].any(dim=0).nonzero()
            length = int(used.max()) + 1 if used.numel() else 1
            encoded["text_tokens"] = encoded["text_tokens"][:, :length].contiguous()
            encoded["text_mask"] = encoded["text_mask"][:, :length].contiguous()
        return cls(encoded, torch.cat(targets), captions, keys, split_ids)

    def subset(self, keep: Tensor) -> FeatureCache:
        """The rows where `keep` (N,) bool is True."""
        rows = keep.nonzero().flatten().tolist()
        return FeatureCache({name: value[keep] for name, value in self.encoded.items()}, self.targets[keep],
                            [self.captions[i] for i in rows], [self.keys[i] for i in rows],
                            [self.split_ids[i] for i in rows])

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[dict]:
        """Mini-batches of `{"encoded": {...}, "targets": (B, T)}` (tokens back in float32)."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size]
            encoded = {name: value[index].float() if name in TOKEN_KEYS else value[index]
                       for name, value in self.encoded.items()}
            yield {"encoded": encoded, "targets": self.targets[index]}


def _cat_padded(values: list[Tensor]) -> Tensor:
    """Concatenate along batch; sequences of different lengths (B, L_i, ...) are right-padded."""
    if values[0].dim() < 2 or len({v.shape[1] for v in values}) == 1:
        return torch.cat(values)
    length = max(v.shape[1] for v in values)
    padded = [torch.nn.functional.pad(v, (0, 0) * (v.dim() - 2) + (0, length - v.shape[1])) for v in values]
    return torch.cat(padded)
