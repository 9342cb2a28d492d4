"""Training augmentation on a whole batch at once: a few tensor ops per step instead of a dozen PIL and
torchvision calls per image.

Per image the loader only decodes and brings the picture to the tower's square size, transparency kept
(`BatchAugment.per_image`: (4, S, S) uint8). Per batch, `BatchAugment` then draws

- open_clip's training crop: a random resized crop with area share in `scale` and aspect in `ratio`
  (torchvision's `RandomResizedCrop` draws, up to 10 tries, then the whole frame);
- with `background="random"`, `augment.RandomBackground`'s draws: a zoom out (the drawing shrunk to a
  share in [zoom_out_min, 1] of the frame at a random place) and a background per sample (white, black
  or any colour) under the transparent pixels; with `"white"`, transparency is flattened onto white;

and samples all crops in one `grid_sample` on premultiplied RGBA, composites and normalises. The draws
follow the same distributions as the per-image path, from torch's generator (so loader seeds govern
them); resampling is bilinear where open_clip's crop is bicubic. Opaque images are never zoomed out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from data_tools.image_ops import resize_center_crop, to_rgba

CROP_TRIES = 10  # torchvision's RandomResizedCrop tries this many draws before taking the whole frame


@dataclass(frozen=True, kw_only=True)
class BatchAugment:
    """Random resized crop + backgrounds + normalisation of (B, 4, S, S) uint8 RGBA into (B, 3, S, S) float."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    background: Literal["white", "random"] = "white"
    white: float = 0.25
    black: float = 0.25
    zoom_out_min: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError("scale must satisfy 0 < min <= max <= 1 and ratio 0 < min <= max")
        if not (0 <= self.white and 0 <= self.black and self.white + self.black <= 1) or not 0 < self.zoom_out_min <= 1:
            raise ValueError("white and black shares must be >= 0 with a sum <= 1, and 0 < zoom_out_min <= 1")

    def per_image(self, image: Image.Image) -> torch.Tensor:
        """One decoded image as (4, S, S) uint8 RGBA: resized (short side) and centre-cropped to S x S where
        it is another size (premultiplied, so transparent pixels do not bleed), alpha 255 where opaque."""
        rgba = to_rgba(resize_center_crop(image, self.size))
        return torch.from_numpy(np.array(rgba)).permute(2, 0, 1)  # (4, S, S)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 4, S, S) uint8 -> (B, 3, S, S) float, cropped, on backgrounds, normalised."""
        batch = images.shape[0]
        pixels = images.float().div_(255)
        alpha = pixels[:, 3:]  # (B, 1, S, S)
        premultiplied = torch.cat([pixels[:, :3] * alpha, alpha], dim=1)  # (B, 4, S, S)
        transparent = (alpha < 1).flatten(1).any(dim=1)  # (B,)
        scale, shift = self._crop_and_zoom(batch, transparent)  # (B, 2) each: x then y
        size = premultiplied.shape[-1]
        pixel_centres = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1  # (S,) in [-1, 1]
        along = pixel_centres * scale[:, :, None] + shift[:, :, None]  # (B, 2, S): the crop is axis-aligned
        grid = torch.stack(torch.broadcast_tensors(along[:, 0, None, :], along[:, 1, :, None]), dim=-1)  # (B, S, S, 2)
        sampled = F.grid_sample(premultiplied, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        composed = sampled[:, :3] + (1 - sampled[:, 3:]) * self._backgrounds(batch)  # (B, 3, S, S)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (composed - mean) / std

    def _crop_and_zoom(self, batch: int, transparent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-axis maps from output to input coordinates ([-1, 1] both), input = scale * output + shift:
        the crop, then the zoom out. (B, 2) scale and (B, 2) shift, x then y"""
        area = torch.empty(batch, CROP_TRIES).uniform_(*self.scale)
        log_ratio = torch.empty(batch, CROP_TRIES).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
        width, height = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()  # shares of the frame
        fits = (width <= 1) & (height <= 1)
        first = fits.float().argmax(dim=1, keepdim=True)  # the first draw that fits, as torchvision takes
        any_fit = fits.any(dim=1)
        width = torch.where(any_fit, width.gather(1, first).squeeze(1), torch.ones(batch))
        height = torch.where(any_fit, height.gather(1, first).squeeze(1), torch.ones(batch))
        shift_x = (torch.rand(batch) * 2 - 1) * (1 - width)  # crop centre, uniform where the crop fits
        shift_y = (torch.rand(batch) * 2 - 1) * (1 - height)
        zoom = torch.ones(batch)
        offset_x, offset_y = torch.zeros(batch), torch.zeros(batch)
        if self.background == "random" and self.zoom_out_min < 1:
            drawn = self.zoom_out_min + (1 - self.zoom_out_min) * torch.rand(batch)
            zoom = torch.where(transparent, drawn, zoom)
            offset_x = (torch.rand(batch) * 2 - 1) * (1 - zoom)  # where the shrunk drawing sits
            offset_y = (torch.rand(batch) * 2 - 1) * (1 - zoom)
        scale = torch.stack([width, height], dim=1) / zoom[:, None]
        shift = torch.stack([shift_x - offset_x, shift_y - offset_y], dim=1) / zoom[:, None]
        return scale, shift

    def _backgrounds(self, batch: int) -> torch.Tensor:
        """Colour under each sample's transparent pixels, in [0, 1]. (B, 3, 1, 1)"""
        if self.background == "white":
            return torch.ones(batch, 3, 1, 1)
        draw = torch.rand(batch, 1)
        colour = torch.randint(0, 256, (batch, 3)).float() / 255
        colour = torch.where(draw < self.white, torch.ones(batch, 3), colour)
        colour = torch.where((draw >= self.white) & (draw < self.white + self.black), torch.zeros(batch, 3), colour)
        return colour.view(batch, 3, 1, 1)
