"""Pixel operations shared by the shard builder and the loader."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

WHITE = (255, 255, 255)


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """RGB copy of `image`; transparent pixels become white (emoji PNGs are RGBA)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is `size`, then crop the centre `size` x `size` square."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return resized.crop((left, top, left + size, top + size))


def encode_jpeg(image: Image.Image, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB image (no EXIF, fixed settings, so builds are byte-identical)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0, optimize=False)
    return buffer.getvalue()


FORMATS_BY_EXTENSION = {"jpg": ("JPEG",), "jpeg": ("JPEG",), "png": ("PNG",), "webp": ("WEBP",)}


def decode_image(data: bytes, extension: str | None = None) -> Image.Image:
    """Fully decoded RGB image from encoded bytes; raises OSError/ValueError if undecodable.

    Naming the format from the extension skips PIL's probing of every plugin (a third
    of the decode time for a 64-px JPEG); a mislabelled file falls back to probing.
    `load()` is forced here so a truncated file fails now, not inside a transform.
    """
    formats = FORMATS_BY_EXTENSION.get(extension or "")
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        if formats is None:
            raise
        image = Image.open(io.BytesIO(data))
    image.load()
    return to_rgb_on_white(image)
