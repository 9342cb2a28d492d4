"""Training-time augmentations that need the alpha channel, applied before open_clip's transform.

Drawings with transparency (shards built with `--background keep`) are flattened
onto a background drawn per sample: white, black or any colour. A model trained
on white-flattened drawings alone learns the white frame as part of every
picture, and another reader's flattening (PIL's plain `convert("RGB")` turns the
transparent pixels of most PNGs black) then moves every image off its caption.
Optionally the drawing is also shrunk to a random share of the frame at a random
place (zoom out), as other drawing sets leave more margin around the subject.
Images without transparency pass through unchanged.
"""

from __future__ import annotations

import torch
from PIL import Image

from data_tools.image_ops import BLACK, WHITE, has_alpha, to_rgb_on, to_rgba


class RandomBackground:
    """PIL image -> RGB PIL image: transparent pixels on a random background (per sample).

    `white` and `black` are the shares of samples put on plain white and plain black; the rest get a uniform
    random colour. With `zoom_out_min` < 1 the drawing is first scaled by s ~ U(zoom_out_min, 1) and placed
    at a uniform random position. Draws come from torch's generator, so loader seeds govern them.
    """

    def __init__(self, *, white: float = 0.25, black: float = 0.25, zoom_out_min: float = 1.0) -> None:
        if not (0 <= white and 0 <= black and white + black <= 1) or not 0 < zoom_out_min <= 1:
            raise ValueError("white and black shares must be >= 0 with a sum <= 1, and 0 < zoom_out_min <= 1")
        self.white, self.black, self.zoom_out_min = white, black, zoom_out_min

    def colour(self) -> tuple[int, int, int]:
        draw = float(torch.rand(()))
        if draw < self.white:
            return WHITE
        if draw < self.white + self.black:
            return BLACK
        return tuple(int(c) for c in torch.randint(0, 256, (3,)))

    def __call__(self, image: Image.Image) -> Image.Image:
        if not has_alpha(image):
            return image
        rgba = to_rgba(image)
        if self.zoom_out_min < 1:
            rgba = self._zoom_out(rgba)
        return to_rgb_on(rgba, self.colour())

    def _zoom_out(self, rgba: Image.Image) -> Image.Image:
        scale = self.zoom_out_min + (1 - self.zoom_out_min) * float(torch.rand(()))
        width, height = rgba.size
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        if small == rgba.size:
            return rgba
        shrunk = rgba.convert("RGBa").resize(small, Image.Resampling.BICUBIC).convert("RGBA")  # premultiplied
        left = int(torch.randint(0, width - small[0] + 1, ()))
        top = int(torch.randint(0, height - small[1] + 1, ()))
        canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
        canvas.paste(shrunk, (left, top))
        return canvas
