"""A contact sheet: a grid of sample images, each with its (wrapped) caption and label below."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from data_tools.atomic_write import atomic_path

CELL = 128  # images are shown at 128 px so 64-px emoji stay legible
TEXT_LINES = 3
LINE_HEIGHT = 12
WRAP_CHARS = 22


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=10)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _cell_text(caption: str, label: str | None) -> list[str]:
    lines = textwrap.wrap(caption, WRAP_CHARS)[: TEXT_LINES - (1 if label else 0)]
    return lines + ([f"[{label}]"[:WRAP_CHARS + 2]] if label else [])


def write_contact_sheet(items: list[tuple[Image.Image, str, str | None]], out: Path, columns: int = 8) -> Path:
    """Draw (image, caption, label) items into a grid PNG at `out` (written atomically)."""
    if not items:
        raise ValueError("no images to draw")
    columns = min(columns, len(items))
    rows = -(-len(items) // columns)
    cell_h = CELL + TEXT_LINES * LINE_HEIGHT + 6
    sheet = Image.new("RGB", (columns * (CELL + 4), rows * cell_h), "white")
    draw, font = ImageDraw.Draw(sheet), _font()
    for index, (image, caption, label) in enumerate(items):
        x, y = (index % columns) * (CELL + 4) + 2, (index // columns) * cell_h + 2
        sheet.paste(image.convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST), (x, y))
        for line_no, line in enumerate(_cell_text(caption, label)):
            fill = (90, 90, 90) if line.startswith("[") else (0, 0, 0)
            draw.text((x, y + CELL + 2 + line_no * LINE_HEIGHT), line, fill=fill, font=font)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
