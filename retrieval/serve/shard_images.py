"""Read one stored image's bytes back out of a shard tar.

The server never builds a file path from a request: the route looks the key up
in the index metadata, which names the shard and the tar member. Reading by
member name scans the tar's headers once per shard (cached); reading by
recorded offset and size is one seek.
"""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path

from retrieval.errors import RetrievalError
from retrieval.serve.registry import ImageLocation
from retrieval.shard_members import read_member_bytes

MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def media_type_of(member: str) -> str:
    """The Content-Type for an image member, by suffix; RetrievalError for a non-image."""
    suffix = Path(member).suffix.lower()
    if suffix not in MEDIA_TYPES:
        raise RetrievalError(f"stored member {member!r} is not an image ({', '.join(MEDIA_TYPES)})")
    return MEDIA_TYPES[suffix]


class ShardImageReader:
    """Reads image bytes by `ImageLocation`, caching each shard's member table."""

    def __init__(self, max_cached_shards: int = 64) -> None:
        self._member_table = functools.lru_cache(maxsize=max_cached_shards)(_scan_members)  # thread-safe LRU

    def read(self, location: ImageLocation) -> bytes:
        offset, size = location.offset, location.size
        if offset is None or size is None:
            span = self._member_table(location.shard).get(location.member)
            if span is None:
                raise RetrievalError(f"shard {location.shard} has no member {location.member!r}; "
                                     "was it rewritten after indexing?")
            offset, size = span
        return read_member_bytes(location.shard, offset, size, location.member)


def _scan_members(shard: Path) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size) for every regular file in the tar."""
    try:
        with tarfile.open(shard, "r:") as tar:  # "r:" = uncompressed, so offsets are file offsets
            return {info.name: (info.offset_data, info.size) for info in tar if info.isfile()}
    except (OSError, tarfile.TarError) as exc:
        raise RetrievalError(f"cannot read shard {shard}: {exc}") from exc
