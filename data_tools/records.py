"""What a source hands to the shard builder: one record per sample, plus dataset facts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class RawPixels:
    """Uncompressed pixels (e.g. one Fashion-MNIST digit), for sources without image files."""

    mode: str
    """PIL mode of `data`, e.g. "L" for 8-bit grayscale."""
    width: int
    height: int
    data: bytes


@dataclass(frozen=True, kw_only=True)
class SourceRecord:
    """One sample before encoding. Exactly one of image_path / image_bytes / pixels is set."""

    key: str
    """Sample key in the tar: unique, deterministic, no dots or slashes."""
    captions: tuple[str, ...]
    """Caption variants; the first is written as KEY.txt. Empty -> skipped as empty_caption."""
    source: str
    """Where the sample came from (a file path, or package/file), stored in KEY.json."""
    image_path: str | None = None
    image_bytes: bytes | None = None
    pixels: RawPixels | None = None
    label: str | None = None
    """Class name (for datasets with one label field); `cls` is its index in `classes`."""
    cls: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    """All label fields, e.g. {"category": ..., "subcategory": ...}."""
    extra: dict[str, object] = field(default_factory=dict)
    """Additional JSON-serialisable metadata stored in KEY.json (e.g. emoji vendor)."""


@dataclass(kw_only=True)
class SourceData:
    """Everything a source produces: records in a fixed order and dataset-level facts."""

    name: str
    """Source spec as given, e.g. "emoji" or "csv:/data/pairs.csv"."""
    records: list[SourceRecord]
    classes: list[str] = field(default_factory=list)
    """Class names; index = the .cls value."""
    label_fields: dict[str, list[str]] = field(default_factory=dict)
    """Every label field's names, e.g. {"category": [...], "subcategory": [...]}."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Inputs dropped while listing (before encoding), by reason."""
    details: dict[str, object] = field(default_factory=dict)
    """Source facts recorded under dataset.json "build" (package versions, split...)."""
