"""`clipline data build --distributor ray`: encode partitions as Ray tasks, shards byte-identical to a local build.

Two passes over the cluster, both writing under the (shared) output dir:

1. encode: records are split into partitions of `shard_size` records; one task per
   partition encodes them and writes the samples it keeps, in record order, as one
   tar `DIR/.segments/NNNNN.tar` (written as `.tar.tmp`, renamed when whole), and
   returns its accounting: kept count and skips by reason.
2. pack: with every partition's kept count known, shard n holds kept samples
   [n·shard_size, (n+1)·shard_size) as in a local build, whichever partitions they
   came from. One task per shard copies them from the segments (a segment that is
   exactly one shard is renamed, no copy), through the same `ShardWriter`, so the
   tar bytes are those of a local build.

A build that fails leaves the `.build-incomplete` marker, finished shards and
segments only (no `.tar` that looks whole and is not); `--overwrite` starts again.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_tools.build import SEGMENT_DIR, BuildConfig, finish_build, prepare_out_dir
from data_tools.distributor import import_ray, ray_session, run_tasks
from data_tools.encode_sample import EncodedSample, encode_record
from data_tools.records import SourceData, SourceRecord
from data_tools.sample_fields import SampleProblem
from data_tools.shard_writer import ShardWriter
from data_tools.skips import LOG
from data_tools.tar_samples import iter_tar_samples


@dataclass(frozen=True)
class SegmentSlice:
    """Kept samples [start, stop) of partition `partition`'s segment tar, which holds `kept` samples."""

    partition: int
    start: int
    stop: int
    kept: int


def build_shards_ray(data: SourceData, config: BuildConfig) -> dict:
    """Write `data` as shards under `config.out` with Ray tasks; returns the dataset.json contents."""
    import_ray()  # a missing Ray fails before the output dir is touched
    prepare_out_dir(config)
    segments = config.out / SEGMENT_DIR
    segments.mkdir()
    size = config.shard_size
    partitions = [data.records[i : i + size] for i in range(0, len(data.records), size)]
    names = [f"partition {p} (records {p * size}..{p * size + len(part) - 1})" for p, part in enumerate(partitions)]
    with ray_session(config.distributed) as ray:
        encoded = run_tasks(ray, encode_partition,
                            [(part, str(segments), p, config.image_size, config.background)
                             for p, part in enumerate(partitions)],
                            names, config=config.distributed, weights=[len(part) for part in partitions],
                            desc=f"build {data.name} (ray)", unit="img", progress=config.progress)
        kept = [count for count, _ in encoded]
        skipped = Counter(data.skipped)
        for _, skips in encoded:
            for key, reason, detail in skips:
                skipped[reason] += 1
                LOG.warning("skipped %s (%s): %s", key, reason, detail)
        plan = shard_plan(kept, size)
        run_tasks(ray, pack_shard, [(str(segments), str(config.out), n, slices) for n, slices in enumerate(plan)],
                  [f"shard {n:05d}" for n in range(len(plan))], config=config.distributed,
                  desc=f"pack {data.name} (ray)", unit="shard", progress=config.progress)
    shutil.rmtree(segments)
    counts = {f"{n:05d}.tar": sum(s.stop - s.start for s in slices) for n, slices in enumerate(plan)}
    return finish_build(data, config, counts, skipped)


def shard_plan(kept: list[int], shard_size: int) -> list[list[SegmentSlice]]:
    """For each shard, the segment slices that fill it: kept samples in order, `shard_size` per shard."""
    plan: list[list[SegmentSlice]] = []
    room = 0  # left in the last shard of the plan
    for partition, count in enumerate(kept):
        start = 0
        while start < count:
            if room == 0:
                plan.append([])
                room = shard_size
            take = min(room, count - start)
            plan[-1].append(SegmentSlice(partition, start, start + take, count))
            start, room = start + take, room - take
    return plan


def encode_partition(records: list[SourceRecord], segments: str, partition: int, image_size: int,
                     background: str) -> tuple[int, list[tuple[str, str, str]]]:
    """Encode one partition into its segment tar; (samples kept, [(key, reason, detail) skipped])."""
    skips: list[tuple[str, str, str]] = []
    # nothing kept: no segment, and no shard plan refers to this partition
    with ShardWriter(Path(segments), shard_size=len(records) + 1, first_index=partition) as writer:
        for record in records:
            result = encode_record(record, image_size=image_size, background=background)
            if isinstance(result, SampleProblem):
                skips.append((result.key, result.reason, result.detail))
            else:
                writer.write(result)
    return len(records) - len(skips), skips


def pack_shard(segments: str, out: str, index: int, slices: list[SegmentSlice]) -> int:
    """Write shard `index` from its segment slices; returns its sample count."""
    seg_dir, out_dir = Path(segments), Path(out)
    only = slices[0]
    if len(slices) == 1 and only.partition == index and (only.start, only.stop) == (0, only.kept):
        os.replace(seg_dir / f"{index:05d}.tar", out_dir / f"{index:05d}.tar")  # the segment is this shard
        return only.kept
    with ShardWriter(out_dir, shard_size=sum(s.stop - s.start for s in slices) + 1, first_index=index) as writer:
        for piece in slices:
            for sample in _samples(seg_dir / f"{piece.partition:05d}.tar", piece.start, piece.stop):
                writer.write(sample)
    return sum(writer.counts.values())


def _samples(path: Path, start: int, stop: int) -> Iterator[EncodedSample]:
    """Samples [start, stop) of a segment tar, read with the loader's tar reader (a broken segment raises)."""

    def broken(reason: str, where: str, exc: Exception) -> None:
        raise exc

    for raw in itertools.islice(iter_tar_samples(str(path), broken), start, stop):
        yield EncodedSample(key=raw["__key__"], files={k: v for k, v in raw.items() if not k.startswith("__")})

