"""Tars written by hand in tests, with plain tarfile (not data_tools' ShardWriter, whose output they check)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path


def write_tar(path: Path, members: Iterable[tuple[str, bytes]], mode: str = "w", **options) -> Path:
    """Write (mode "w") or extend ("a") the tar at `path` with (name, bytes) members; `options` go to tarfile.open."""
    with tarfile.open(path, mode, **options) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_shard_dir(out: Path, samples: list[tuple[str, dict[str, bytes]]], shard_size: int, info: dict) -> Path:
    """`out/00000.tar`, ... holding `shard_size` (key, {ext: bytes}) samples each, and dataset.json: `info` with
    the samples per shard and in all."""
    out.mkdir(parents=True, exist_ok=True)
    chunks = [samples[start : start + shard_size] for start in range(0, len(samples), shard_size)]
    for n, chunk in enumerate(chunks):
        write_tar(out / f"{n:05d}.tar", ((f"{key}.{ext}", data) for key, files in chunk for ext, data in files.items()))
    counts = {f"{n:05d}.tar": len(chunk) for n, chunk in enumerate(chunks)}
    (out / "dataset.json").write_text(json.dumps({"shards": counts, "num_samples": len(samples), **info}))
    return out
