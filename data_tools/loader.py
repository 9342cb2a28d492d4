"""Streaming loader: shard tars -> shuffled, rank/worker-split, decoded, batched dicts.

The pipeline (a webdataset `DataPipeline` inside a torch `DataLoader`):

    shard list -> [shard shuffle] -> split by rank -> split by worker   (or: resample shards)
      -> read tar samples -> [sample shuffle buffer] -> decode + transform -> batch (+ tokenize)

Splitting is by whole shards. In the normal (non-resampled) mode every sample is seen
exactly once per epoch across all ranks and workers; a rank or worker that gets no
shard (fewer shards than ranks x workers) yields nothing and ends at once, it never
waits. Ranks can therefore see different numbers of batches: for DDP training use
`resampled=True`, which draws shards with replacement forever (each rank/worker with
its own seeded stream), and stop after a fixed number of steps. Resampling can weight the
sources of a `a::b` spec (`source_weights`, as open_clip's --train-data-upsampling-factors):
a shard is drawn with probability proportional to its samples times its source's weight, so
weights 3,1 draw each sample of `a` three times as often as each sample of `b`.

Each batch carries `group` (B,) int ids: samples of one concept (the json `concept`, else the
same first caption) share an id, for multi-positive contrastive losses.

Corrupt samples and tars are skipped, logged and counted (`loader.skipped`), never raised.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, get_worker_info

from data_tools.errors import DataError
from data_tools.sample_fields import SampleProblem, parse_sample
from data_tools.skips import LOG, SkipCounter
from data_tools.tar_samples import iter_tar_samples

ImageTransform = Callable[[Image.Image], torch.Tensor]
BatchTransform = Callable[[torch.Tensor], torch.Tensor]
Tokenize = Callable[[list[str]], torch.Tensor]


SOURCE_SEPARATOR = "::"  # "emoji-train::fmnist-train" trains on both (open_clip's --train-data syntax)


def list_shards(path: str | Path) -> list[str]:
    """Tar paths of a shard spec: a directory (its sorted `*.tar`), one tar, a `{a..b}` brace
    pattern, or several of these joined by `::` (their shards together)."""
    if SOURCE_SEPARATOR in str(path):
        return [shard for part in str(path).split(SOURCE_SEPARATOR) for shard in list_shards(part)]
    if "{" in str(path):
        shards = list(wds.shardlists.expand_urls(str(path)))
        missing = [s for s in shards if not Path(s).is_file()]
        if missing:
            raise DataError(f"{missing[0]} (from the pattern {path}) does not exist; check the shard range")
        return shards
    path = Path(path)
    if path.is_file() and path.suffix == ".tar":
        return [str(path)]
    if not path.is_dir():
        raise DataError(f"shard directory {path} does not exist; build one with `clipline data build`")
    shards = sorted(str(p) for p in path.glob("*.tar"))
    if not shards:
        raise DataError(f"no .tar shards in {path}; build some with `clipline data build SOURCE --out {path}`")
    return shards


def count_samples(shards: str | Path | tuple[str, ...]) -> int | None:
    """Samples in a shard spec (as `list_shards` takes) or a tuple of tar paths, from the dataset.json files;
    None if unknown."""
    shards = shards if isinstance(shards, tuple) else tuple(list_shards(shards))
    counts: dict[str, int] = {}
    for directory in {str(Path(s).parent) for s in shards}:
        for name, count in read_dataset_info(directory).get("shards", {}).items():
            counts[str(Path(directory) / name)] = int(count)
    if not all(s in counts for s in shards):
        return None
    return sum(counts[s] for s in shards)


def read_dataset_info(path: str | Path) -> dict:
    """Contents of `dataset.json` in a shard directory (or next to a tar); {} if absent."""
    path = Path(path)
    info_path = (path if path.is_dir() else path.parent) / "dataset.json"
    if not info_path.is_file():
        return {}
    try:
        return json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{info_path} is not valid JSON ({exc}); rebuild the shards or delete it") from exc


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit rank/world size, else torch.distributed's, else env RANK/WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        resolved = (rank, world_size)
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        resolved = (torch.distributed.get_rank(), torch.distributed.get_world_size())
    else:
        resolved = (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))
    if not 0 <= resolved[0] < resolved[1]:
        raise DataError(f"rank {resolved[0]} is outside world size {resolved[1]}; pass 0 <= rank < world_size")
    return resolved


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


@dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """How a shard loader reads, splits and batches (`make_loader`); see the module docstring for splitting."""

    batch_size: int
    """Samples per batch."""
    num_workers: int = 2
    """Loader worker processes (0: read in the calling process)."""
    shuffle: bool = False
    """Shuffle the shard order and, through a buffer, the samples (per seed and epoch)."""
    shuffle_buffer: int = 1000
    """Samples in the shuffle buffer."""
    resampled: bool = False
    """Draw shards with replacement forever, each rank/worker its own seeded stream (for DDP)."""
    seed: int = 0
    epoch: int = 0
    """Shuffles and caption choices differ per (seed, epoch); `ShardLoader.set_epoch` moves it on."""
    caption: Literal["random", "first"] = "first"
    """"random": one of the stored caption variants per sample (training); "first": the .txt caption (evaluation)."""
    drop_last: bool = False
    """Leave out a last batch smaller than batch_size."""
    rank: int | None = None
    world_size: int | None = None
    """This process's place in a distributed job (None: torch.distributed's, else env RANK/WORLD_SIZE, else 0 of 1)."""
    source_weights: tuple[float, ...] | None = None
    """One weight per `::` source of a string shard spec (needs `resampled`)."""
    keep_alpha: bool = False
    """Hand images with transparency to the transform as RGBA (it flattens them, e.g. RandomBackground);
    else they are flattened onto white."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.caption not in ("random", "first"):
            raise DataError(f"caption must be 'random' or 'first', got {self.caption!r}")
        if self.source_weights is not None and not self.resampled:
            raise DataError("source weights need a resampled loader over a `a::b` shard spec")


@dataclass(frozen=True, kw_only=True)
class _Spec:
    """Everything a pipeline stage needs; frozen and picklable for worker processes."""

    shards: tuple[str, ...]
    shard_weights: tuple[float, ...] | None
    """Resampling weight of each shard (None: uniform)."""
    config: LoaderConfig
    """With rank and world_size resolved."""

    def rng(self, purpose: str) -> random.Random:
        """A generator seeded per (seed, epoch, rank, worker); string seeds hash the same in every process."""
        c = self.config
        return random.Random(f"{purpose}-{c.seed}-{c.epoch}-{c.rank}-{_worker()[0]}")


# The pipeline stages: plain generator functions, bound to their arguments with functools.partial
# (picklable for worker processes); each but the first takes the stage before it as its last argument.


def _shard_source(spec: _Spec) -> Iterator[str]:
    """First stage: the shard paths this rank and worker read, in order."""
    config, (worker, num_workers) = spec.config, _worker()
    if config.resampled:
        rng = spec.rng("resample")
        while True:
            if spec.shard_weights is None:
                yield rng.choice(spec.shards)
            else:
                yield from rng.choices(spec.shards, weights=spec.shard_weights, k=64)
    order = list(spec.shards)
    if config.shuffle:
        # same permutation on every rank (no rank/worker in the seed) so the split stays disjoint
        random.Random(f"shards-{config.seed}-{config.epoch}").shuffle(order)
    yield from order[config.rank :: config.world_size][worker::num_workers]


def _read_samples(spec: _Spec, skips: SkipCounter, urls: Iterable[str]) -> Iterator[dict]:
    # resampling draws shards forever: if none of many draws gives a sample, every
    # shard is unreadable, and stopping beats spinning without ever yielding
    max_empty_draws, empty_draws = max(100, 10 * len(spec.shards)), 0
    for url in urls:
        empty_draws += 1
        for sample in iter_tar_samples(url, skips.add):
            empty_draws = 0
            yield sample
        if empty_draws >= max_empty_draws:
            LOG.error("no readable sample in %d shard draws; stopping this loader worker", empty_draws)
            return


def _shuffle_buffer(spec: _Spec, samples: Iterable[dict]) -> Iterator[dict]:
    """Sample-level shuffle with a bounded buffer (random pick, replaced by the next sample)."""
    rng, size, buffer = spec.rng("samples"), max(1, spec.config.shuffle_buffer), []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        index = rng.randrange(size)
        yield buffer[index]
        buffer[index] = sample
    rng.shuffle(buffer)
    yield from buffer


def _decode(spec: _Spec, transform: ImageTransform, skips: SkipCounter, samples: Iterable[dict]) -> Iterator[dict]:
    """Raw sample -> {image, caption, key, label, meta}; bad samples are counted and dropped."""
    rng = spec.rng("captions")
    for raw in samples:
        parsed = parse_sample(raw, keep_alpha=spec.config.keep_alpha)
        where = f"{raw['__url__']}:{raw['__key__']}"
        if isinstance(parsed, SampleProblem):
            skips.add(parsed.reason, where, parsed.detail or None)
            continue
        try:
            tensor = transform(parsed.image)
        except Exception as exc:  # a user transform may fail on an odd image; skip, don't stop training
            skips.add("transform_error", where, exc)
            continue
        captions = parsed.captions
        caption = captions[0] if spec.config.caption == "first" else rng.choice(captions)
        yield {"image": tensor, "caption": caption, "key": parsed.key, "label": parsed.label, "meta": parsed.meta,
               "group": concept_id(parsed.meta, captions[0])}


def concept_id(meta: dict, first_caption: str) -> int:
    """A stable int64 id of the sample's concept: its json `concept`, else its first caption."""
    concept = meta.get("concept")
    name = f"concept:{concept}" if isinstance(concept, str) and concept else f"caption:{first_caption}"
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def _batch(spec: _Spec, tokenize: Tokenize | None, batch_transform: BatchTransform | None,
           samples: Iterable[dict]) -> Iterator[dict]:
    """Group decoded samples into batch dicts; tokenizing (and a batch transform) here keeps it in the workers."""
    samples = iter(samples)
    while batch := list(itertools.islice(samples, spec.config.batch_size)):
        if len(batch) == spec.config.batch_size or not spec.config.drop_last:
            yield _collate(batch, tokenize=tokenize, batch_transform=batch_transform)


def _collate(batch: list[dict], *, tokenize: Tokenize | None, batch_transform: BatchTransform | None) -> dict:
    captions = [s["caption"] for s in batch]
    images = [s["image"] for s in batch]
    out = None
    if get_worker_info() is not None and batch_transform is None:
        # stack straight into shared memory, as torch's default_collate does in workers:
        # saves copying the batch into shared memory again when it is sent to the parent
        out = images[0].new_empty((len(images), *images[0].shape)).share_memory_()
    stacked = torch.stack(images, out=out)
    return {
        "image": stacked if batch_transform is None else batch_transform(stacked),  # (B, 3, H, W)
        "text": tokenize(captions) if tokenize is not None else captions,  # (B, L)
        "caption": captions,
        "key": [s["key"] for s in batch],
        "label": torch.tensor([s["label"] for s in batch], dtype=torch.long),  # (B,)
        "group": torch.tensor([s["group"] for s in batch], dtype=torch.long),  # (B,)
        "meta": [s["meta"] for s in batch],
    }


class ShardLoader:
    """Iterable of batch dicts over shards; each `iter()` is one epoch (or endless if resampled).

    Attributes: `skipped` (counts by reason, summed over workers), `num_samples`
    (from dataset.json when every shard is listed there, else None), `set_epoch(n)`.
    """

    def __init__(self, spec: _Spec, transform: ImageTransform, tokenize: Tokenize | None,
                 batch_transform: BatchTransform | None = None) -> None:
        self._spec, self._transform, self._tokenize = spec, transform, tokenize
        self._batch_transform = batch_transform
        self._context = multiprocessing.get_context()  # the platform default (fork on Linux <= 3.13)
        self._skips = SkipCounter(self._context)
        self.num_samples = count_samples(spec.shards)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch` (takes effect at the next `iter()`)."""
        self._spec = replace(self._spec, config=replace(self._spec.config, epoch=epoch))

    @property
    def skipped(self) -> dict[str, int]:
        return self._skips.as_dict()

    def __iter__(self) -> Iterator[dict]:
        spec = self._spec
        pipeline = wds.DataPipeline(
            functools.partial(_shard_source, spec),
            functools.partial(_read_samples, spec, self._skips),
            functools.partial(_shuffle_buffer, spec) if spec.config.shuffle else None,
            functools.partial(_decode, spec, self._transform, self._skips),
            functools.partial(_batch, spec, self._tokenize, self._batch_transform),
        )
        num_workers = spec.config.num_workers
        if num_workers == 0:
            return iter(pipeline)
        loader = DataLoader(pipeline, batch_size=None, num_workers=num_workers, multiprocessing_context=self._context)
        return iter(loader)


def shard_weights(spec: str | Path, source_weights: tuple[float, ...]) -> tuple[str, tuple[float, ...]]:
    """The shards of a `a::b` spec and each one's resampling weight: its source's weight times its
    samples (from dataset.json; 1 per shard when a count is unknown)."""
    parts = str(spec).split(SOURCE_SEPARATOR)
    if len(parts) != len(source_weights):
        raise DataError(f"{len(source_weights)} source weights for {len(parts)} sources in {spec!r}: "
                        "give one weight per `::`-separated source")
    if any(not (w >= 0) for w in source_weights) or not any(w > 0 for w in source_weights):
        raise DataError(f"source weights must be >= 0 and not all 0, got {','.join(map(str, source_weights))}")
    shards: list[str] = []
    weights: list[float] = []
    for part, weight in zip(parts, source_weights):
        part_shards = list_shards(part)
        counts = {s: count_samples((s,)) for s in part_shards}
        known = all(c is not None for c in counts.values())
        shards += part_shards
        weights += [weight * (counts[s] if known else 1) for s in part_shards]
    return tuple(shards), tuple(weights)


def make_loader(
    shards: str | Path | list[str],
    config: LoaderConfig,
    *,
    image_transform: ImageTransform,
    tokenize: Tokenize | None = None,
    batch_transform: BatchTransform | None = None,
) -> ShardLoader:
    """A streaming loader over `shards` (a spec as `list_shards` takes, or a list of tars), read as `config` says.

    Yields dicts: `image` (B,3,H,W) float, `text` (B,L) long if `tokenize` else list[str],
    `caption`, `key`, `label` (B,) long (-1 without .cls), `meta` (the .json dicts).
    `batch_transform`, when given, maps each stacked batch of `image_transform` outputs to the
    batch's images (e.g. `batch_augment.BatchAugment`: per-image uint8 in, augmented floats out).
    """
    rank, world_size = resolve_rank(config.rank, config.world_size)
    weights = None
    if config.source_weights is not None:
        if not isinstance(shards, (str, Path)):
            raise DataError("source weights need a resampled loader over a `a::b` shard spec")
        shard_list, weights = shard_weights(shards, tuple(config.source_weights))
    else:
        shard_list = tuple(list_shards(shards) if isinstance(shards, (str, Path)) else [str(s) for s in shards])
        if not shard_list:
            raise DataError("no shards given to the loader; pass a shard directory or a list of .tar paths")
    spec = _Spec(shards=shard_list, shard_weights=weights, config=replace(config, rank=rank, world_size=world_size))
    return ShardLoader(spec, image_transform, tokenize, batch_transform)
