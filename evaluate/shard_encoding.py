"""Encode every image of a shard directory with an `Encoder`, batch by batch.

One loop for the evaluation commands (`clipline zeroshot`, `clipline eval
retrieval`) and their in-loop evaluators, so they load and encode the same way
and get the same speed-ups:
- loader workers chosen for the machine (`auto_loader_workers`: none on <= 2
  cores, where a worker process only takes time from the model's threads);
  without workers the next batch is decoded in a thread while the model runs
  (`prefetch_in_thread`), so decoding and compute still overlap;
- the precision asked for (bf16 autocast where the hardware runs it natively,
  for "auto"), applied around the forward pass only, so it never leaks into
  the caller's code between batches;
- on CPU, glibc is told to keep freed memory in the process
  (`keep_freed_memory`): every batch frees and re-allocates the same large
  activations, which otherwise come back as ~75k-180k page faults per batch of
  128 (fp32 tiny ViT 64 px: 175-211 -> ~240 images/s on the 2-core machine);
- the preprocessing's float conversion and normalisation run once per batch
  (`data_tools.batch_normalize`: the per-image transform's values bit for bit);
- images go to the model as the loader produced them (no copy, no cast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from tqdm import tqdm

from data_tools.batch_normalize import split_eval_transform
from data_tools.loader import LoaderConfig, make_loader
from data_tools.loader_workers import auto_loader_workers
from data_tools.thread_prefetch import prefetch_in_thread
from evaluate.errors import EvaluateError
from pretrain.cpu_memory import keep_freed_memory
from pretrain.precision import encoder_device, precision_context


class ImageEncoder(Protocol):
    """What image encoding needs: `Encoder`, an adapter, or a fine-tuned tower with the same preprocessing."""

    preprocess: Callable[[Any], torch.Tensor]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True, kw_only=True)
class EncodingConfig:
    """How the images of a shard directory are encoded for evaluation."""

    batch_size: int = 128
    """Images per forward pass."""
    max_samples: int | None = None
    """Evaluate only the first N samples."""
    num_workers: int | None = None
    """Loader worker processes decoding images; default: chosen for the machine (0 on <= 2 cores, where a
    worker would only take time from the model's threads, else 2)."""
    precision: Literal["auto", "bf16", "fp32"] = "fp32"
    """Encoder compute: bf16 autocast (about 2.5x faster on CPUs with avx512_bf16), fp32, or auto (bf16 where
    the hardware runs it natively)."""

    def __post_init__(self) -> None:
        if self.max_samples is not None and self.max_samples < 1:
            raise EvaluateError(f"`max_samples` must be at least 1, got {self.max_samples} "
                                "(leave it out for every sample)")


class ShardImageFeatures:
    """Iterable of `(features, batch)`: (B, D) L2-normalised float32 features and the loader's batch dict.

    The batch is cut to `encoding.max_samples` in total. `skipped` (corrupt samples by
    reason) is complete once the iteration has finished.
    """

    def __init__(self, encoder: ImageEncoder, data: str | Path, encoding: EncodingConfig = EncodingConfig(), *,
                 progress: bool = False, desc: str = "encoding images") -> None:
        self.encoder, self.max_samples, self.precision = encoder, encoding.max_samples, encoding.precision
        self.progress, self.desc = progress, desc
        self.num_workers = auto_loader_workers(encoding.num_workers)
        # rank 0 of 1: every sample, also when called from one rank of a distributed job (in-loop eval, embed)
        config = LoaderConfig(batch_size=encoding.batch_size, num_workers=self.num_workers, caption="first", rank=0,
                              world_size=1)
        per_image, per_batch = split_eval_transform(encoder.preprocess)  # same values, normalised per batch
        self.loader = make_loader(data, config, image_transform=per_image, batch_transform=per_batch)
        total, limit = self.loader.num_samples, self.max_samples  # total: from the dataset.json of the shards read
        self.total = min(total, limit) if total and limit else (total or limit)

    @property
    def skipped(self) -> dict[str, int]:
        return dict(getattr(self.loader, "skipped", {}))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        seen, limit = 0, self.max_samples
        compute = precision_context(self.encoder, self.precision)
        if encoder_device(self.encoder).type == "cpu":
            keep_freed_memory()
        bar = tqdm(total=self.total, desc=self.desc, unit="img", disable=not self.progress, leave=False)
        with bar, contextlib.closing(self._batches()) as batches:  # closing: stop the prefetch thread on break
            for batch in batches:
                take = len(batch["key"]) if limit is None else min(len(batch["key"]), limit - seen)
                if take < len(batch["key"]):  # the first `take` samples, tensor and list fields alike
                    batch = {name: value[:take] for name, value in batch.items()}
                with torch.no_grad(), compute():
                    features = self.encoder.encode_image(batch["image"])  # (B, D)
                seen += take
                bar.update(take)
                yield torch.nn.functional.normalize(features.float(), dim=-1), batch
                if limit is not None and seen >= limit:
                    break

    def _batches(self) -> Iterator[dict[str, Any]]:
        """The loader's batches; decoded one ahead in a thread when there are no worker processes."""
        yield from prefetch_in_thread(self.loader) if self.num_workers == 0 else self.loader

