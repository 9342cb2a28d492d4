"""The shards of one embed process turned into vectors, shard by shard, the model never waiting on decoding.

- Reading, decoding, preprocessing and tokenising run ahead of the model: in a
  background thread (`prefetch_in_thread`) when there are no loader worker
  processes (the choice on <= 2 cores), else in the workers. The thread runs
  across shard boundaries, so the next shard's first batches are decoded while
  this shard's captions are encoded and its part is written. The float
  conversion and normalisation of the preprocessing run once per batch
  (`data_tools.batch_normalize`, same values).
- The image tower runs per batch; the text tower once per shard, over all its
  captions sorted by token length (`Encoder.encode_tokens`), so each chunk of
  `batch_size` captions is padded only to its own longest (emoji-train shards:
  4.1-5.2 tokens on average, 11-18 at most, in a 32-token context).
- Both towers run in the precision chosen (`pretrain.precision`: bf16 autocast
  where the hardware runs it natively, for "auto"); vectors come back
  L2-normalised float32 in the shard's sample order either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from data_tools.batch_normalize import split_eval_transform
from data_tools.loader import LoaderConfig, make_loader
from data_tools.loader_workers import auto_loader_workers
from data_tools.thread_prefetch import prefetch_in_thread
from pretrain.cpu_memory import keep_freed_memory
from pretrain.precision import autocast, encoder_device

if TYPE_CHECKING:
    from pretrain.encoder import Encoder
    from retrieval.embed import EmbedConfig


@dataclass(kw_only=True)
class ShardVectors:
    """One shard's samples as vectors, with what the part's metadata needs."""

    shard: str
    images: np.ndarray
    """(N, D) float32 unit vectors."""
    texts: np.ndarray
    """(N, D) float32 unit vectors, row i of the caption of image row i."""
    keys: list[str]
    captions: list[str]
    metas: list[dict]
    skipped: dict[str, int]
    """Samples (or whole tar remainders, `corrupt_tar`) that could not be read, by reason."""


def embed_stream(encoder: Encoder, shards: Sequence[str], config: EmbedConfig) -> Iterator[ShardVectors]:
    """The vectors of each of `shards`, in order, one `ShardVectors` per shard, computed as `config` says
    (its batch size, loader workers and precision, the last already resolved to bf16 or fp32)."""
    batch_size = config.batch_size
    compute = autocast(config.precision, encoder_device(encoder))
    if encoder_device(encoder).type == "cpu":
        keep_freed_memory()  # see evaluate.shard_encoding: every batch re-allocates the same activations
    workers = auto_loader_workers(config.num_workers)
    batches = _shard_batches(encoder, shards, batch_size, workers)
    stream = prefetch_in_thread(batches) if workers == 0 else batches
    with contextlib.closing(stream):  # stop the prefetch thread when the caller stops early
        images: list[np.ndarray] = []
        tokens: list[torch.Tensor] = []
        keys: list[str] = []
        captions: list[str] = []
        metas: list[dict] = []
        for shard, batch, skipped in stream:
            if batch is not None:
                with torch.no_grad(), compute():
                    features = encoder.encode_image(batch["image"])  # (B, D)
                images.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
                tokens.append(batch["text"])  # (B, L)
                keys += batch["key"]
                captions += batch["caption"]
                metas += batch["meta"]
                continue
            dim = encoder.embed_dim
            with torch.no_grad(), compute():
                texts = encoder.encode_tokens(torch.cat(tokens), chunk=batch_size) if tokens else torch.zeros(0, dim)
            yield ShardVectors(shard=shard, images=np.concatenate(images) if images else np.zeros((0, dim), np.float32),
                               texts=texts.cpu().numpy(), keys=keys, captions=captions, metas=metas, skipped=skipped)
            images, tokens, keys, captions, metas = [], [], [], [], []


def _shard_batches(encoder: Encoder, shards: Sequence[str], batch_size: int,
                   workers: int) -> Iterator[tuple[str, dict[str, Any] | None, dict[str, int]]]:
    """(shard, batch, {}) for each decoded, tokenised batch of each shard, then (shard, None, its skip counts)."""
    per_image, per_batch = split_eval_transform(encoder.preprocess)
    for shard in shards:
        # rank 0 of 1: the whole shard, also when this process is one rank of several (they split by shard)
        config = LoaderConfig(batch_size=batch_size, num_workers=workers, caption="first", rank=0, world_size=1)
        loader = make_loader([shard], config, image_transform=per_image, batch_transform=per_batch,
                             tokenize=encoder.tokenizer)
        for batch in loader:
            yield shard, batch, {}
        yield shard, None, loader.skipped
