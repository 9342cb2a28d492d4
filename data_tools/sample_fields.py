"""What makes a raw tar sample usable: one definition shared by the loader and `validate`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from PIL import Image

from data_tools.image_ops import decode_image

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True, kw_only=True)
class ParsedSample:
    key: str
    image: Image.Image
    """Decoded RGB image (transparent pixels on white), or RGBA when parsed with keep_alpha."""
    captions: list[str]
    """The .txt caption first, then the .json `captions` variants; never empty."""
    label: int
    """The .cls class index, -1 without one."""
    meta: dict


@dataclass(frozen=True, kw_only=True)
class SampleProblem:
    key: str
    reason: str
    """Reading shards: one of data_tools.skips.SKIP_REASONS; building them: one of encode_record's."""
    detail: str = ""


def sample_captions(raw: dict, meta: dict) -> list[str]:
    """Caption variants: the .txt (or json `caption`) first, then json `captions`; empties dropped."""
    first = raw["txt"].decode("utf-8", errors="replace").strip() if "txt" in raw else ""
    first = first or str(meta.get("caption") or "").strip()
    listed = meta.get("captions") if isinstance(meta.get("captions"), list) else []
    variants = [c.strip() for c in listed if isinstance(c, str)]
    return list(dict.fromkeys(c for c in [first, *variants] if c))


def parse_sample(raw: dict, *, keep_alpha: bool = False) -> ParsedSample | SampleProblem:
    """Decode metadata, caption and image of one raw sample, or say why it is unusable; `keep_alpha` keeps
    the transparency of an image that has it (RGBA) instead of flattening it onto white."""
    key = str(raw["__key__"])
    try:
        meta = json.loads(raw["json"]) if "json" in raw else {}
        if not isinstance(meta, dict):
            raise ValueError("the .json is not an object")
        label = int(raw["cls"]) if raw.get("cls") else -1
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and int() raise ValueError
        return SampleProblem(key=key, reason="bad_metadata", detail=str(exc))
    captions = sample_captions(raw, meta)
    if not captions:
        return SampleProblem(key=key, reason="no_caption")
    extension = next((ext for ext in IMAGE_EXTENSIONS if ext in raw), None)
    if extension is None:
        return SampleProblem(key=key, reason="no_image", detail=f"members: {sorted(k for k in raw if not k.startswith('__'))}")
    try:
        image = decode_image(raw[extension], extension, keep_alpha=keep_alpha)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for bad bytes
        return SampleProblem(key=key, reason="undecodable_image", detail=f"{type(exc).__name__}: {exc}")
    return ParsedSample(key=key, image=image, captions=captions, label=label, meta=meta)
