"""Write numbered webdataset tars atomically and byte-for-byte reproducibly."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from data_tools.atomic_write import PendingFile
from data_tools.encode_sample import EncodedSample

# member order inside a sample; readers group consecutive members by key
MEMBER_ORDER = ("jpg", "txt", "json", "cls")


class ShardWriter:
    """Writes `DIR/00000.tar`, `00001.tar`, ... with `shard_size` samples each.

    Numbering starts at `first_index` (a distributed build writes its part of the
    range). Each tar is written as `NNNNN.tar.tmp` (a `PendingFile`: no `*.tar`
    glob picks it up, and the build marker names it) and renamed when complete,
    so an interrupted build never leaves a `.tar` that looks finished. Member
    headers carry fixed mtime/owner/mode so the same samples give identical bytes.
    """

    def __init__(self, out_dir: Path, shard_size: int, first_index: int = 0) -> None:
        self.out_dir, self.shard_size, self.first_index = out_dir, shard_size, first_index
        self.counts: dict[str, int] = {}
        self._tar: tarfile.TarFile | None = None
        self._pending: PendingFile | None = None
        self._in_shard = 0

    def write(self, sample: EncodedSample) -> None:
        tar = self._tar or self._open_next()
        for ext in sorted(sample.files, key=lambda e: (MEMBER_ORDER + (e,)).index(e)):
            data = sample.files[ext]
            info = tarfile.TarInfo(f"{sample.key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
        self._in_shard += 1
        if self._in_shard == self.shard_size:
            self.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Finish the last shard; after an error (even Ctrl-C), drop it instead, so an interrupted
        build leaves only finished tars, never a partial one."""
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def close(self) -> dict[str, int]:
        """Finish the shard being written (the next `write` starts another); returns samples per shard file name."""
        if self._tar is not None and self._pending is not None:
            self._tar.close()
            self.counts[self._pending.commit().name] = self._in_shard
            self._tar, self._pending = None, None
        return self.counts

    def abort(self) -> None:
        """Drop the shard being written (after an error), leaving finished shards in place."""
        if self._tar is not None and self._pending is not None:
            self._tar.close()
            self._pending.discard()
        self._tar, self._pending = None, None

    def _open_next(self) -> tarfile.TarFile:
        name = f"{self.first_index + len(self.counts):05d}.tar"
        self._pending = PendingFile(self.out_dir / name, temporary=f"{name}.tmp")
        self._tar = tarfile.open(self._pending.path, "w", format=tarfile.USTAR_FORMAT)
        self._in_shard = 0
        return self._tar
