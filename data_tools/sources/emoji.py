"""The `emoji` source: Google and Twitter emoji drawings (npm emoji-datasource-*), 64-px PNGs.

Each emoji concept (one Unicode sequence) is drawn by both vendors; captions come from
its name and short names, labels are its category (10) and subcategory (99). The
train/val split is by concept, so val concepts are unseen in train, or by vendor.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from data_tools.errors import DataError
from data_tools.records import SourceData, SourceRecord
from data_tools.sources.npm_cache import cache_root, npm_pack, unpack_selected

VERSION = "16.0.0"
VENDORS = ("google", "twitter")
SPLITS = ("all", "train", "val")


@dataclass(frozen=True, kw_only=True)
class EmojiConfig:
    split: str = "all"
    """all | train | val."""
    split_by: str = "concept"
    """concept: ~val_fraction of concepts (hash of the unified code) are val, both vendors;
    vendor: google is train, twitter is val."""
    val_fraction: float = 0.2
    cache_dir: Path | None = None
    """Where npm tarballs are cached (default: $CLIPLINE_CACHE/npm or ~/.cache/clipline/npm)."""


def is_val_concept(unified: str, val_fraction: float) -> bool:
    """Deterministic concept split: the same emoji is val for every vendor and every run."""
    bucket = int(hashlib.sha256(unified.upper().encode()).hexdigest()[:8], 16) % 10_000
    return bucket < val_fraction * 10_000


def emoji_captions(entry: dict) -> tuple[str, ...]:
    """Caption variants: the name, templated names, and the short names as words."""
    short_words = [s.replace("_", " ").replace("-", " ").strip() for s in entry.get("short_names") or []]
    name = (entry.get("name") or "").strip().lower() or (short_words[0] if short_words else "")
    if not name:
        return ()
    variants = [name, f"an emoji of {name}", f"{name} emoji", ", ".join(w for w in short_words if w)]
    return tuple(dict.fromkeys(v for v in variants if v))


def _package_dir(vendor: str, cache_dir: Path) -> Path:
    tarball = npm_pack(f"emoji-datasource-{vendor}", VERSION, cache_dir)
    prefix = f"package/img/{vendor}/64/"
    return unpack_selected(tarball, lambda name: name == "package/emoji.json" or name.startswith(prefix)) / "package"


def _in_split(entry: dict, vendor: str, options: EmojiConfig) -> bool:
    if options.split == "all":
        return True
    if options.split_by == "vendor":
        is_val = vendor != VENDORS[0]
    else:
        is_val = is_val_concept(entry["unified"], options.val_fraction)
    return is_val == (options.split == "val")


def load_emoji(options: EmojiConfig, name: str = "emoji") -> SourceData:
    """List both vendors' emoji (concept-major order: each concept's google then twitter)."""
    if options.split not in SPLITS:
        raise DataError(f"emoji --split must be one of {', '.join(SPLITS)}, got {options.split!r}")
    if options.split_by not in ("concept", "vendor"):
        raise DataError(f"emoji --split-by must be 'concept' or 'vendor', got {options.split_by!r}")
    cache_dir = options.cache_dir or cache_root() / "npm"
    package_dirs = {vendor: _package_dir(vendor, cache_dir) for vendor in VENDORS}
    entries = json.loads((package_dirs[VENDORS[0]] / "emoji.json").read_text(encoding="utf-8"))
    entries.sort(key=lambda e: (e.get("sort_order", 0), e["unified"]))
    categories = sorted({e["category"] for e in entries})
    subcategories = sorted({e["subcategory"] for e in entries})
    records, no_image = [], 0
    for entry in entries:
        for vendor in VENDORS:
            if not entry.get(f"has_img_{vendor}"):
                no_image += 1
                continue
            if _in_split(entry, vendor, options):
                records.append(_record(entry, vendor, package_dirs[vendor], categories, options))
    return SourceData(
        name=name,
        records=records,
        classes=categories,
        label_fields={"category": categories, "subcategory": subcategories},
        skipped={"no_vendor_image": no_image} if no_image else {},
        details={
            "packages": [f"emoji-datasource-{v}@{VERSION}" for v in VENDORS],
            "split": options.split,
            "split_by": options.split_by,
            "val_fraction": options.val_fraction,
        },
    )


def _record(entry: dict, vendor: str, package_dir: Path, categories: list[str], options: EmojiConfig) -> SourceRecord:
    unified = entry["unified"].lower()
    concept_split = "val" if is_val_concept(unified, options.val_fraction) else "train"
    relative = f"img/{vendor}/64/{entry['image']}"
    return SourceRecord(
        key=f"{vendor}_{unified}",
        captions=emoji_captions(entry),
        source=f"emoji-datasource-{vendor}@{VERSION}/{relative}",
        image_path=str(package_dir / relative),
        label=entry["category"],
        cls=categories.index(entry["category"]),
        labels={"category": entry["category"], "subcategory": entry["subcategory"]},
        extra={
            "vendor": vendor,
            "unified": unified,
            "short_names": list(entry.get("short_names") or []),
            "concept_split": concept_split,  # which side of the concept split, even in --split all
        },
    )
