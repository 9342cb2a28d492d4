"""Sources of image-caption pairs: `emoji`, `fashion-mnist`, `folder:PATH`, `csv:/jsonl:/parquet:PATH`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_tools.errors import DataError
from data_tools.records import SourceData

SOURCE_HELP = "emoji | fashion-mnist | folder:PATH | csv:PATH | jsonl:PATH | parquet:PATH"


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Options that only some sources read."""

    split: str | None = None
    """emoji: all (default) | train | val; fashion-mnist: train (default) | test."""
    split_by: str = "concept"
    """emoji: concept (val concepts unseen in train) | vendor (google train, twitter val)."""
    val_fraction: float = 0.2
    """emoji --split-by concept: share of concepts in val."""
    captions: str | None = None
    """fashion-mnist: class (default; templates around the class name) | retail (shop-listing names such
    as "jumper" or "chinos" and the item's tone; never the class names). emoji: names (default; the
    name, templated names, short names) | rich (also category/subcategory phrases, sentence templates)."""
    vendors: str | None = None
    """emoji: comma-separated vendors, any of google,twitter,apple,facebook (default google,twitter)."""
    path: Path | None = None
    """fashion-mnist: directory with the IDX .gz files (default /usr/share/datasets/fashion-mnist)."""
    image_column: str = "image"
    """csv/jsonl/parquet: column with the image path (relative to the table) or bytes."""
    caption_column: str = "caption"
    """csv/jsonl/parquet: column with the caption (string or list of variants)."""
    label_column: str | None = None
    """csv/jsonl/parquet: optional column with a class name."""


def load_source(spec: str, options: SourceConfig) -> SourceData:
    """Resolve a SOURCE argument to its records; DataError for an unknown or misused source."""
    kind, colon, rest = spec.partition(":")
    if kind in ("emoji", "fashion-mnist") and colon:
        raise DataError(f"source {kind} takes no :PATH (use `path` for fashion-mnist); got {spec!r}")
    for name in ("split", "captions"):
        if kind not in ("emoji", "fashion-mnist") and getattr(options, name) is not None:
            raise DataError(f"`{name}` applies to emoji and fashion-mnist only, not {kind!r}")
    if kind != "emoji" and options.vendors is not None:
        raise DataError(f"`vendors` applies to emoji only, not {kind!r}")
    if kind == "emoji":
        from data_tools.sources.emoji import VENDORS, EmojiConfig, load_emoji

        vendors = tuple(v.strip() for v in options.vendors.split(",") if v.strip()) if options.vendors else VENDORS
        emoji = EmojiConfig(split=options.split or "all", split_by=options.split_by, val_fraction=options.val_fraction,
                            vendors=vendors, captions=options.captions or "names")
        return load_emoji(emoji, name=spec)
    if kind == "fashion-mnist":
        from data_tools.sources.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(options.split or "train", options.path, name=spec,
                                  captions=options.captions or "class")
    if kind in ("folder", "csv", "jsonl", "parquet"):
        if not rest:
            raise DataError(f"source {kind}: needs a path, e.g. {kind}:/data/my_{kind}")
        if kind == "folder":
            from data_tools.sources.folder import load_folder

            return load_folder(Path(rest), name=spec)
        from data_tools.sources.tables import load_table

        return load_table(Path(rest), kind, options, name=spec)
    raise DataError(f"unknown source {spec!r}; use one of: {SOURCE_HELP}")
