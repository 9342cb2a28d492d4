"""The `fashion-mnist` source: 28x28 grayscale clothing images from IDX files, 10 classes."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

from data_tools.errors import DataError
from data_tools.records import RawPixels, SourceData, SourceRecord
from data_tools.sources.fashion_captions import CAPTION_STYLES, CLASSES, class_captions, retail_captions

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
FILES = {"train": "train", "test": "t10k"}


def _open_idx(directory: Path, stem: str) -> bytes:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            opener = gzip.open if candidate.suffix == ".gz" else open
            try:
                with opener(candidate, "rb") as handle:
                    return handle.read()
            except (OSError, EOFError) as exc:
                raise DataError(f"cannot read {candidate} ({exc}); re-download the Fashion-MNIST files") from exc
    raise DataError(f"{directory / (stem + '.gz')} not found; install the Debian package dataset-fashion-mnist "
                    "(apt-get install dataset-fashion-mnist) or pass `path` DIR with the IDX files")


def read_idx(data: bytes, expected_dims: int, name: str) -> tuple[tuple[int, ...], bytes]:
    """Parse an IDX file of unsigned bytes: returns (shape, payload)."""
    if len(data) < 4:
        raise DataError(f"{name} is too short to be an IDX file")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or ndim != expected_dims:
        raise DataError(f"{name} is not an IDX file of {expected_dims}-d unsigned bytes (header {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    payload = data[4 + 4 * ndim :]
    size = math.prod(shape)
    if len(payload) != size:
        raise DataError(f"{name} holds {len(payload)} bytes, header says {size}; the file is truncated")
    return shape, payload


def load_fashion_mnist(
    split: str = "train", path: Path | None = None, name: str = "fashion-mnist", captions: str = "class"
) -> SourceData:
    """Records of one split; `captions` is a style from fashion_captions (class | retail)."""
    if split not in FILES:
        raise DataError(f"fashion-mnist `split` must be 'train' or 'test', got {split!r}")
    if captions not in CAPTION_STYLES:
        raise DataError(f"fashion-mnist `captions` must be one of {' | '.join(CAPTION_STYLES)}, got {captions!r}")
    directory = Path(path) if path is not None else DEFAULT_DIR
    stem = FILES[split]
    (count, height, width), pixels = read_idx(_open_idx(directory, f"{stem}-images-idx3-ubyte"), 3, f"{stem}-images")
    (label_count,), labels = read_idx(_open_idx(directory, f"{stem}-labels-idx1-ubyte"), 1, f"{stem}-labels")
    if label_count != count:
        raise DataError(f"{directory}: {count} images but {label_count} labels; the files do not belong together")
    step = height * width
    records = []
    for index in range(count):
        cls = labels[index]
        if cls >= len(CLASSES):
            raise DataError(f"{stem}-labels: label {cls} at {index} is not one of the 10 classes")
        key, image = f"{split}_{index:05d}", pixels[index * step : (index + 1) * step]
        texts = class_captions(CLASSES[cls]) if captions == "class" else retail_captions(CLASSES[cls], image, key)
        records.append(SourceRecord(key=key, captions=texts, source=f"fashion-mnist/{stem}:{index}",
                                    pixels=RawPixels(mode="L", width=width, height=height, data=image),
                                    label=CLASSES[cls], cls=cls, labels={"class": CLASSES[cls]}))
    return SourceData(name=name, records=records, classes=list(CLASSES), label_fields={"class": list(CLASSES)},
                      details={"split": split, "path": str(directory), "captions": captions})
