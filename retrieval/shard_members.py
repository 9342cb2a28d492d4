"""Where each sample's image lives in a shard tar: member name, data offset and size.

Recorded at embedding time so a search result can be read back with one seek
(`retrieval.serve.shard_images`), and so the web page and `--grid` can show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from data_tools.image_ops import decode_image
from data_tools.sample_fields import IMAGE_EXTENSIONS
from data_tools.tar_samples import TarFormatError, iter_tar_entries, split_member_name
from retrieval.errors import RetrievalError


@dataclass(frozen=True)
class MemberSpan:
    member: str
    offset: int
    size: int


def image_members(shard: str | Path) -> dict[str, MemberSpan]:
    """key -> the image member of that sample (first image extension in the loader's order).

    A tar that breaks part-way gives the members before the break: the loader
    skips the samples after it too, so nothing embedded lacks a location.
    """
    found: dict[str, dict[str, MemberSpan]] = {}
    try:
        with open(shard, "rb", buffering=1 << 16) as stream:  # headers only; uncompressed: file offsets
            for name, offset, size, _ in iter_tar_entries(stream, read_data=False):
                parts = split_member_name(name)
                if parts and parts[1] in IMAGE_EXTENSIONS:
                    found.setdefault(parts[0], {})[parts[1]] = MemberSpan(name, offset, size)
    except (OSError, TarFormatError):
        pass
    return {key: next(spans[e] for e in IMAGE_EXTENSIONS if e in spans) for key, spans in found.items()}


def read_member_bytes(shard: str | Path, offset: int, size: int, member: str = "") -> bytes:
    """The `size` bytes at `offset` in `shard`: one tar member's data, read with one seek."""
    try:
        with open(shard, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as err:
        raise RetrievalError(f"cannot read shard {shard} ({err.strerror}); is the data dir still there?") from err
    if len(data) != size:
        raise RetrievalError(f"shard {shard} is shorter than when it was indexed (member {member!r})")
    return data


def read_image(shard: str | Path, offset: int, size: int, member: str = "") -> Image.Image:
    """The RGB image stored at `offset` in `shard` (transparent pixels on white)."""
    data = read_member_bytes(shard, offset, size, member)
    try:
        return decode_image(data, Path(member).suffix.lstrip(".").lower() or None)
    except (OSError, ValueError, SyntaxError) as err:  # PIL's ways of saying "not an image"
        raise RetrievalError(f"image {member!r} in {shard} does not decode: {err}") from err
