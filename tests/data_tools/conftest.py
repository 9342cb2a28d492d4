"""Tiny synthetic inputs for data_tools tests (real emoji live in tests/fixtures/emoji_shards)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from data_tools.loader import list_shards
from data_tools.sample_fields import ParsedSample, parse_sample
from data_tools.tar_samples import iter_tar_samples
from tests.conftest import FIXTURE_SHARDS

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def image_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    image = Image.new(mode, size, colour + ((255,) if mode == "RGBA" else ()))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, colour: tuple[int, int, int], caption: str | None = None, **kwargs) -> Path:
    """An image file in the format its suffix names, with a `caption` sidecar (same name, .txt) if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[path.suffix[1:].lower()]
    path.write_bytes(image_bytes(colour, fmt=fmt, **kwargs))
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)
    return path


def drawing(size: int = 32) -> Image.Image:
    """A red square (the middle half) on a transparent frame, with a half-transparent blue stripe near the bottom."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))  # transparent black, as most PNG writers store it
    image.paste((200, 0, 0, 255), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    image.paste((0, 0, 255, 128), (0, 7 * size // 8, size, 7 * size // 8 + 2))
    return image


def read_samples(shards: str | Path) -> list[ParsedSample]:
    """Every sample of a shard set, parsed as the loader parses it; an unreadable tar or sample fails the test."""
    samples = [parse_sample(raw) for path in list_shards(shards) for raw in iter_tar_samples(path, pytest.fail)]
    assert all(isinstance(s, ParsedSample) for s in samples)
    return samples  # type: ignore[return-value]


@pytest.fixture
def fixture_shards(tmp_path: Path) -> Path:
    """A private copy of the checked-in emoji shards (tests may damage it)."""
    return shutil.copytree(FIXTURE_SHARDS, tmp_path / "emoji_shards")
