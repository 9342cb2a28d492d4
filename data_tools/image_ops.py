"""Pixel operations shared by the shard builder and the loader."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
BACKGROUNDS = {"white": WHITE, "black": BLACK}
"""Colours transparent pixels can be flattened onto when shards are built (`--background`)."""


def has_alpha(image: Image.Image) -> bool:
    """Whether `image` has transparent pixels to flatten (an alpha channel or a transparent palette entry)."""
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def to_rgba(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGBA" else image.convert("RGBA")


def to_rgb_on(image: Image.Image, colour: tuple[int, int, int] = WHITE) -> Image.Image:
    """RGB copy of `image` with transparent pixels flattened onto `colour` (emoji PNGs are RGBA)."""
    if image.mode == "RGB":
        return image
    if has_alpha(image):
        rgba = to_rgba(image)
        return Image.alpha_composite(Image.new("RGBA", rgba.size, colour + (255,)), rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the short side is `size`, then crop the centre `size` x `size` square (RGB or RGBA;
    RGBA is resized premultiplied, so transparent pixels do not bleed their colour into the edges)."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    premultiplied = image.mode == "RGBA"
    source = image.convert("RGBa") if premultiplied else image
    resized = source.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    return cropped.convert("RGBA") if premultiplied else cropped


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes (fixed settings, so builds are byte-identical)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB image (no EXIF, fixed settings, so builds are byte-identical)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0, optimize=False)
    return buffer.getvalue()


FORMATS_BY_EXTENSION = {"jpg": ("JPEG",), "jpeg": ("JPEG",), "png": ("PNG",), "webp": ("WEBP",)}


def decode_image(data: bytes, extension: str | None = None, *, keep_alpha: bool = False) -> Image.Image:
    """Fully decoded RGB image from encoded bytes (transparent pixels on white; RGBA instead where the
    image has transparency and `keep_alpha`); raises OSError/ValueError if undecodable.

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
    if keep_alpha and has_alpha(image):
        return to_rgba(image)
    return to_rgb_on(image, WHITE)
