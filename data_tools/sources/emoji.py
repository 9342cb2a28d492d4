"""The `emoji` source: Google and Twitter emoji drawings (npm emoji-datasource-*), 64-px PNGs.

Each emoji concept (one Unicode sequence) is drawn by every vendor chosen (`vendors`;
Google and Twitter by default, Apple and Facebook as extra views of the same concepts);
captions come from its name and short names (`captions="names"`), plus category and
subcategory phrases and sentence templates (`captions="rich"`); labels are its category
(10) and subcategory (99). The train/val split is by concept, so val concepts are unseen
in train, or by vendor. Every sample's json carries `concept` (the Unicode sequence):
drawings of one concept are positives of each other in a multi-positive loss.
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
"""The default vendors: their images are freely licensed (Apache-2.0 / CC-BY-4.0)."""
ALL_VENDORS = ("google", "twitter", "apple", "facebook")
"""Every vendor emoji-datasource ships at this version, with the same emoji.json keys."""
SPLITS = ("all", "train", "val")
CAPTION_STYLES = ("names", "rich")


@dataclass(frozen=True, kw_only=True)
class EmojiConfig:
    split: str = "all"
    """all | train | val."""
    split_by: str = "concept"
    """concept: ~val_fraction of concepts (hash of the unified code) are val, both vendors;
    vendor: google is train, twitter is val."""
    val_fraction: float = 0.2
    vendors: tuple[str, ...] = VENDORS
    """Which vendors' drawings to include (any of ALL_VENDORS); with split_by=vendor the first is train."""
    captions: str = "names"
    """names: the name, templated names and short names; rich: also category/subcategory phrases
    and sentence templates (more variants per sample, one drawn per step)."""
    cache_dir: Path | None = None
    """Where npm tarballs are cached (default: $CLIPLINE_CACHE/npm or ~/.cache/clipline/npm)."""


def is_val_concept(unified: str, val_fraction: float) -> bool:
    """Deterministic concept split: the same emoji is val for every vendor and every run."""
    bucket = int(hashlib.sha256(unified.upper().encode()).hexdigest()[:8], 16) % 10_000
    return bucket < val_fraction * 10_000


def emoji_captions(entry: dict, style: str = "names") -> tuple[str, ...]:
    """Caption variants, the plain name first: the name, templated names, the short names as words;
    with style "rich" also phrases naming its category and subcategory, and sentence templates."""
    short_words = [s.replace("_", " ").replace("-", " ").strip() for s in entry.get("short_names") or []]
    name = (entry.get("name") or "").strip().lower() or (short_words[0] if short_words else "")
    if not name:
        return ()
    variants = [name, f"an emoji of {name}", f"{name} emoji", ", ".join(w for w in short_words if w)]
    if style == "rich":
        category = (entry.get("category") or "").strip().lower()
        subcategory = (entry.get("subcategory") or "").replace("-", " ").strip().lower()
        variants += [
            f"a drawing of {name}", f"an icon of {name}", f"a picture of {name}, a small colourful icon",
            f"{name}, an emoji from the {category} category", f"{subcategory} emoji: {name}",
            f"an emoji of {name} ({subcategory}, {category})",
        ]
    return tuple(dict.fromkeys(v for v in variants if v))


def _package_dir(vendor: str, cache_dir: Path) -> Path:
    tarball = npm_pack(f"emoji-datasource-{vendor}", VERSION, cache_dir)
    prefix = f"package/img/{vendor}/64/"
    return unpack_selected(tarball, lambda name: name == "package/emoji.json" or name.startswith(prefix)) / "package"


def _in_split(entry: dict, vendor: str, train_vendor: str, options: EmojiConfig) -> bool:
    if options.split == "all":
        return True
    by_vendor = options.split_by == "vendor"
    is_val = vendor != train_vendor if by_vendor else is_val_concept(entry["unified"], options.val_fraction)
    return is_val == (options.split == "val")


def load_emoji(options: EmojiConfig, name: str = "emoji") -> SourceData:
    """List the chosen vendors' emoji (concept-major order: each concept's drawings in vendor order)."""
    if options.split not in SPLITS:
        raise DataError(f"emoji `split` must be one of {', '.join(SPLITS)}, got {options.split!r}")
    if options.split_by not in ("concept", "vendor"):
        raise DataError(f"emoji `split_by` must be 'concept' or 'vendor', got {options.split_by!r}")
    unknown = [v for v in options.vendors if v not in ALL_VENDORS]
    if unknown or not options.vendors:
        raise DataError(f"emoji `vendors` must name some of {', '.join(ALL_VENDORS)}, got {','.join(options.vendors)!r}")
    if options.captions not in CAPTION_STYLES:
        raise DataError(f"emoji `captions` must be one of {', '.join(CAPTION_STYLES)}, got {options.captions!r}")
    vendors = tuple(dict.fromkeys(options.vendors))
    cache_dir = options.cache_dir or cache_root() / "npm"
    package_dirs = {vendor: _package_dir(vendor, cache_dir) for vendor in vendors}
    entries = json.loads((package_dirs[vendors[0]] / "emoji.json").read_text(encoding="utf-8"))
    entries.sort(key=lambda e: (e.get("sort_order", 0), e["unified"]))
    categories = sorted({e["category"] for e in entries})
    subcategories = sorted({e["subcategory"] for e in entries})
    records, no_image = [], 0
    for entry in entries:
        for vendor in vendors:
            if not entry.get(f"has_img_{vendor}"):
                no_image += 1
                continue
            if _in_split(entry, vendor, vendors[0], options):
                records.append(_record(entry, vendor, package_dirs[vendor], categories, options))
    details = {"packages": [f"emoji-datasource-{v}@{VERSION}" for v in vendors], "captions": options.captions,
               "split": options.split, "split_by": options.split_by, "val_fraction": options.val_fraction}
    return SourceData(name=name, records=records, classes=categories,
                      label_fields={"category": categories, "subcategory": subcategories},
                      skipped={"no_vendor_image": no_image} if no_image else {}, details=details)


def _record(entry: dict, vendor: str, package_dir: Path, categories: list[str], options: EmojiConfig) -> SourceRecord:
    unified = entry["unified"].lower()
    concept_split = "val" if is_val_concept(unified, options.val_fraction) else "train"
    relative = f"img/{vendor}/64/{entry['image']}"
    extra = {
        "vendor": vendor, "unified": unified,
        "concept": unified,  # the same for every vendor's drawing: positives in a multi-positive loss
        "short_names": list(entry.get("short_names") or []),
        "concept_split": concept_split,  # which side of the concept split, even in --split all
    }
    return SourceRecord(key=f"{vendor}_{unified}", captions=emoji_captions(entry, options.captions),
                        source=f"emoji-datasource-{vendor}@{VERSION}/{relative}",
                        image_path=str(package_dir / relative), label=entry["category"],
                        cls=categories.index(entry["category"]),
                        labels={"category": entry["category"], "subcategory": entry["subcategory"]}, extra=extra)
