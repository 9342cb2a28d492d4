"""Build WebDataset shards from a source: encode in worker processes, write tars in order."""

from __future__ import annotations

import functools
import multiprocessing
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from tqdm import tqdm

from data_tools.atomic_write import write_json_atomic
from data_tools.build_marker import mark_build_finished, mark_build_started
from data_tools.distributor import DistributorConfig
from data_tools.encode_sample import EncodedSample, encode_record
from data_tools.errors import DataError
from data_tools.output_paths import check_output_dir
from data_tools.records import SourceData, SourceRecord
from data_tools.sample_fields import SampleProblem
from data_tools.shard_writer import ShardWriter
from data_tools.skips import LOG

Background = Literal["white", "black", "keep"]
BUILD_BACKGROUNDS = get_args(Background)
SEGMENT_DIR = ".segments"  # a Ray build's encoded partitions before they become shards


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """How to write the shards (what to read is the source's business)."""

    out: Path
    """Output directory; created if missing."""
    image_size: int = 64
    """Side of the square stored images (short side resized to this, then centre-cropped)."""
    shard_size: int = 1000
    """Samples per tar."""
    background: Background = "white"
    """What transparent pixels become: white or black (flattened, JPEG), or keep (images with
    transparency stored as RGBA PNG; readers flatten them onto white, and training can put them on
    random backgrounds: pretrain data.background=random)."""
    workers: int = 2
    """Encoding processes; 0 or 1 encodes in this process. Output is identical either way."""
    overwrite: bool = False
    """Replace shards already in `out` (otherwise refuse, so two datasets never mix)."""
    progress: bool = True
    """Show a progress bar on stderr."""
    distributed: DistributorConfig = field(default_factory=DistributorConfig)
    """Local processes (--workers) or one Ray task per `shard_size` records; the shards are byte-identical."""


def prepare_out_dir(config: BuildConfig) -> None:
    check_output_dir(config.out)
    old = sorted(config.out.glob("*.tar")) + sorted(config.out.glob("*.tar.tmp"))
    if old and not config.overwrite:
        raise DataError(f"{config.out} already holds shards ({old[0].name}, ...); pass `overwrite` or choose another `out`")
    mark_build_started(config.out)  # before anything is removed or written: a kill from here on is visible
    for path in old:
        path.unlink()
    shutil.rmtree(config.out / SEGMENT_DIR, ignore_errors=True)  # a killed Ray build's encoded partitions
    (config.out / "dataset.json").unlink(missing_ok=True)


def _encoded(records: list[SourceRecord], config: BuildConfig) -> Iterator[EncodedSample | SampleProblem]:
    """Encoded samples in record order, whatever the number of workers."""
    encode = functools.partial(encode_record, image_size=config.image_size, background=config.background)
    if config.workers <= 1:
        yield from map(encode, records)
        return
    chunk = max(1, min(64, len(records) // (config.workers * 8) or 1))
    with multiprocessing.Pool(config.workers) as pool:
        yield from pool.imap(encode, records, chunksize=chunk)  # imap keeps input order


def build_shards(data: SourceData, config: BuildConfig) -> dict:
    """Write `data` as shards under `config.out`; returns the dataset.json contents it wrote."""
    check_build_inputs(data, config)
    if config.distributed.distributor == "ray":
        from data_tools.build_ray import build_shards_ray

        return build_shards_ray(data, config)
    prepare_out_dir(config)
    skipped = Counter(data.skipped)
    bar = tqdm(total=len(data.records), desc=f"build {data.name}", unit="img", disable=not config.progress)
    with ShardWriter(config.out, config.shard_size) as writer, bar:
        for result in _encoded(data.records, config):
            bar.update(1)
            if isinstance(result, SampleProblem):
                skipped[result.reason] += 1
                LOG.warning("skipped %s (%s): %s", result.key, result.reason, result.detail)
            else:
                writer.write(result)
    return finish_build(data, config, writer.counts, skipped)


def check_build_inputs(data: SourceData, config: BuildConfig) -> None:
    """Refuse bad sizes, an empty source or duplicate keys before anything is written."""
    if config.image_size < 8 or config.shard_size < 1:
        raise DataError("`image_size` must be >= 8 and `shard_size` >= 1")
    if config.background not in BUILD_BACKGROUNDS:
        raise DataError(f"`background` must be one of {', '.join(BUILD_BACKGROUNDS)}, got {config.background!r}")
    if not data.records:
        raise DataError(f"source {data.name} gave no samples (check the path, split or columns)")
    dup = next((key for key, n in Counter(r.key for r in data.records).items() if n > 1), None)
    if dup is not None:
        raise DataError(f"source {data.name} gives duplicate sample key {dup!r}; keys must be unique")


def finish_build(data: SourceData, config: BuildConfig, counts: dict[str, int], skipped: Counter) -> dict:
    """Write dataset.json for the shards written (`counts`: samples per tar) and clear the build marker."""
    if not counts:
        raise DataError(f"every sample of {data.name} was skipped ({dict(skipped)}); nothing written")
    info = {
        "shards": counts,
        "num_samples": sum(counts.values()),
        "classes": data.classes,
        "label_fields": data.label_fields,
        "image_size": config.image_size,
        "source": data.name,
        "build": {
            "shard_size": config.shard_size,
            "image_format": "png+jpg" if config.background == "keep" else "jpg",
            "background": config.background,
            "tool": "clipline data build",
            **data.details,
        },
        "skipped": dict(sorted(skipped.items())),
    }
    write_json_atomic(config.out / "dataset.json", info)
    mark_build_finished(config.out)
    return info
