"""Turn one SourceRecord into the files of one shard sample (runs in builder workers)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from data_tools.image_ops import (
    BACKGROUNDS, WHITE, encode_jpeg, encode_png, has_alpha, resize_center_crop, to_rgb_on, to_rgba)
from data_tools.records import SourceRecord
from data_tools.sample_fields import SampleProblem


@dataclass(frozen=True, kw_only=True)
class EncodedSample:
    key: str
    files: dict[str, bytes]
    """Extension -> member bytes ("jpg", "txt", "json"[, "cls"])."""


def _open_image(record: SourceRecord) -> Image.Image:
    if record.pixels is not None:
        px = record.pixels
        return Image.frombytes(px.mode, (px.width, px.height), px.data)
    image = Image.open(io.BytesIO(record.image_bytes) if record.image_bytes is not None else record.image_path)
    image.load()  # decode now so a truncated file fails here, inside the try
    return image


def encode_record(record: SourceRecord, image_size: int, background: str = "white") -> EncodedSample | SampleProblem:
    """Resize (short side, centre crop), flatten transparency onto `background` and JPEG-encode (or, with
    background "keep", PNG-encode an image that has transparency as RGBA), and add caption/json/cls."""
    captions = [c.strip() for c in record.captions if c and c.strip()]
    if not captions:
        return SampleProblem(key=record.key, reason="empty_caption", detail=record.source)
    if record.image_path is None and record.image_bytes is None and record.pixels is None:
        return SampleProblem(key=record.key, reason="missing_image", detail=f"{record.source}: no image given")
    try:
        image = _open_image(record)
    except FileNotFoundError as exc:
        return SampleProblem(key=record.key, reason="missing_image", detail=f"{record.source}: {exc.strerror}")
    except UnidentifiedImageError:
        return SampleProblem(key=record.key, reason="not_an_image", detail=record.source)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return SampleProblem(key=record.key, reason="corrupt_image", detail=f"{record.source}: {exc}")
    keep_alpha = background == "keep" and has_alpha(image)
    flat = to_rgba(image) if keep_alpha else to_rgb_on(image, BACKGROUNDS.get(background, WHITE))  # "keep": no alpha
    image = resize_center_crop(flat, image_size)
    meta: dict[str, object] = {"key": record.key, "caption": captions[0], "captions": captions, "source": record.source,
                               "width": image.width, "height": image.height}
    if record.label is not None:
        meta["label"] = record.label
    if record.labels:
        meta["labels"] = dict(record.labels)
    meta.update(record.extra)
    files = {
        **({"png": encode_png(image)} if keep_alpha else {"jpg": encode_jpeg(image)}),
        "txt": captions[0].encode("utf-8"),
        "json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"),
    }
    if record.cls is not None:
        files["cls"] = str(record.cls).encode("ascii")
    return EncodedSample(key=record.key, files=files)
