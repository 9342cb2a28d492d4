"""Frozen image features of a shard directory, encoded once and cached on disk.

Every few-shot method works on L2-normalised image features; a sweep over
methods x shots x seeds must not re-encode. The cache is content-addressed:
the key hashes the checkpoint id and the shard list with sizes and mtimes, so
a retrained checkpoint or rebuilt shards miss the cache and nothing is stale.
Labels are stored raw (the .json `label` and `labels`, the .cls index) so one
cached file serves any --label-field.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from evaluate.class_names import cls_class_names, label_parts, sample_label
from data_tools.atomic_write import atomic_path
from finetune.errors import FinetuneError

if TYPE_CHECKING:
    from evaluate.shard_encoding import ImageEncoder
    from pretrain.encoder import Encoder


CACHE_VERSION = 3


@dataclass(kw_only=True)
class FeatureSet:
    """Image features of one shard directory with each sample's key and raw labels."""

    features: Tensor
    """(N, D) L2-normalised float32 image features."""
    keys: list[str]
    """Sample keys, row order of `features`."""
    metas: list[dict[str, Any]]
    """Per sample, the label parts of its .json (`evaluate.class_names.label_parts`): top-level names, `labels`."""
    cls: list[int]
    """Per sample, its .cls index into info["classes"] (-1 without one)."""
    info: dict[str, Any]
    """The label parts of dataset.json: classes, label_fields, source."""

    def label_names(self, label_field: str | None) -> list[str | None]:
        """Each sample's class name (evaluate.class_names rules, as zero-shot reads them); None if absent."""
        classes = cls_class_names(self.info, label_field)
        return [sample_label(m, c, label_field, classes) for m, c in zip(self.metas, self.cls)]


def default_cache_dir() -> Path:
    """$CLIPLINE_FEATURE_CACHE, else $XDG_CACHE_HOME/clipline/features, else ~/.cache/clipline/features."""
    if os.environ.get("CLIPLINE_FEATURE_CACHE"):
        return Path(os.environ["CLIPLINE_FEATURE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "clipline" / "features"


def cache_key(checkpoint_id: str, data_dir: str | Path) -> str:
    """Hash of the checkpoint id and each shard's name, size and mtime (not its place: a moved dir still hits)."""
    from data_tools.loader import list_shards

    files = [Path(p) for p in list_shards(data_dir)]
    if (Path(data_dir) / "dataset.json").exists():
        files.append(Path(data_dir) / "dataset.json")
    stats = [(os.path.relpath(p, data_dir), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"version": CACHE_VERSION, "checkpoint": checkpoint_id, "files": stats})
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cached_features(encoder: Encoder, data_dir: str | Path, *, cache_dir: str | Path | None = None) -> FeatureSet:
    """The encoder's features of `data_dir`, from the cache or encoded (and cached) now."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"{cache_key(encoder.checkpoint_id, data_dir)}.pt"
    if path.exists():
        return FeatureSet(**torch.load(path, weights_only=True))
    features = encode_shards(encoder, data_dir)
    with atomic_path(path) as tmp:
        torch.save(vars(features), tmp)
    return features


def encode_shards(encoder: ImageEncoder, data_dir: str | Path) -> FeatureSet:
    """Encode every image in `data_dir` with `encoder.encode_image` (fp32, normalised), 256 per batch.

    The shared shard-encoding loop (evaluate.shard_encoding): loader workers
    chosen for the machine, decoding overlapped with the model.
    """
    from data_tools.loader import read_dataset_info
    from evaluate.shard_encoding import EncodingConfig, ShardImageFeatures

    info = {k: v for k, v in read_dataset_info(data_dir).items() if k in ("classes", "label_fields", "source")}
    blocks: list[Tensor] = []
    keys: list[str] = []
    metas: list[dict[str, Any]] = []
    cls: list[int] = []
    start = last = time.monotonic()
    for features, batch in ShardImageFeatures(encoder, data_dir, EncodingConfig(batch_size=256)):
        blocks.append(features)
        keys += list(batch["key"])
        metas += [label_parts(m) for m in batch["meta"]]
        cls += batch["label"].tolist()
        if time.monotonic() - last > 10:
            last = time.monotonic()
            rate = len(keys) / (last - start)
            print(f"encoding {data_dir}: {len(keys)} images ({rate:.0f}/s)", file=sys.stderr, flush=True)
    if not keys:
        raise FinetuneError(f"no readable images in {data_dir}; check it with `clipline data inspect {data_dir}`")
    return FeatureSet(features=torch.cat(blocks), keys=keys, metas=metas, cls=cls, info=info)


def load_images(data_dir: str | Path, keys: list[str], transform: Callable[[Any], Tensor]) -> Tensor:
    """(len(keys), 3, H, W) preprocessed images of the samples named by `keys`, in that order.

    Reads the tars raw and decodes only the wanted samples: 16 shots x 10 classes
    out of 60,000 images should not cost 60,000 JPEG decodes.
    """
    from data_tools.loader import list_shards
    from data_tools.sample_fields import SampleProblem, parse_sample
    from data_tools.tar_samples import iter_tar_samples

    wanted = {k: i for i, k in enumerate(keys)}
    out: list[Tensor | None] = [None] * len(keys)
    for shard in list_shards(data_dir):
        for raw in iter_tar_samples(shard, lambda reason, where, exc: None):  # the loader reports corrupt tars
            index = wanted.get(str(raw["__key__"]))
            parsed = parse_sample(raw) if index is not None else None
            if parsed is not None and not isinstance(parsed, SampleProblem):
                out[index] = transform(parsed.image).half()  # half: a few thousand 64-px images stay small
    missing = [k for k, v in zip(keys, out) if v is None]
    if missing:
        raise FinetuneError(f"{len(missing)} samples (e.g. {missing[0]!r}) vanished from {data_dir}; rebuild the cache")
    return torch.stack(out)  # type: ignore[arg-type]
