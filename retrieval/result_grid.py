"""A PNG contact sheet of search results: each image read back from its shard, with rank and score."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from data_tools.atomic_write import atomic_path
from retrieval.errors import RetrievalError
from retrieval.shard_members import read_image

CELL = 128  # pixels per thumbnail side
CAPTION_HEIGHT = 30
PLACEHOLDER = (200, 200, 200)


def save_result_grid(results: list[dict], path: str | Path, *, title: str = "", columns: int = 5) -> Path:
    """Draw `results` (Retriever result dicts) as a grid PNG at `path`, written atomically."""
    if not results:
        raise RetrievalError("no results to draw")
    columns = max(1, min(columns, len(results)))
    rows = math.ceil(len(results) / columns)
    top = 24 if title else 0
    sheet = Image.new("RGB", (columns * CELL, top + rows * (CELL + CAPTION_HEIGHT)), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    if title:
        pen.text((4, 5), title[:120], fill=(0, 0, 0))
    for n, result in enumerate(results):
        x, y = (n % columns) * CELL, top + (n // columns) * (CELL + CAPTION_HEIGHT)
        sheet.paste(_thumbnail(result), (x, y))
        pen.text((x + 3, y + CELL + 2), f"#{result['rank']}  {result['score']:.3f}", fill=(0, 0, 0))
        pen.text((x + 3, y + CELL + 15), str(result["caption"])[:22], fill=(80, 80, 80))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)


def _thumbnail(result: dict) -> Image.Image:
    """The result's image fitted into a CELL square; a grey square if it cannot be read."""
    cell = Image.new("RGB", (CELL, CELL), PLACEHOLDER)
    if result.get("offset", -1) < 0:
        return cell
    try:
        image = read_image(result["shard"], result["offset"], result["size"], result["member"])
    except RetrievalError:
        return cell  # a moved or rewritten shard should not stop the other thumbnails
    image.thumbnail((CELL, CELL), Image.Resampling.LANCZOS)  # only ever shrinks
    if max(image.size) < CELL:  # small emoji: scale up crisply instead of leaving a tiny icon
        scale = CELL // max(image.size)
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    cell.paste(image, ((CELL - image.width) // 2, (CELL - image.height) // 2))
    return cell
