"""Which image regions match a text: patch-level heat maps, saved as PNG overlays.

Four ways to score each ViT patch against a text embedding t (unit vector):

- `tokens`: the tower's output patch tokens, through the final LayerNorm and the
  visual projection into the joint space, cosine with t.
- `value`: the same, but the last block's patch tokens are taken
  from its value path alone (no query-key attention, residual or MLP),
  as in MaskCLIP / ClearCLIP. The last block's attention mixes every patch
  with the global context, which makes `tokens` maps noisy; the value path
  keeps each patch's own content.
- `gradcam`: Grad-CAM for the image-text cosine at the last block's input
  (the pooled class token sees the patches only through that block):
  relu(sum_c mean_p(d cos / d A_pc) * A_pc).
- `rise`: RISE, random partial views: each pixel scores the mean image-text
  cosine of the random coarse masks that kept it, minus the mean over all
  masks (400 seeded masks on a 4 x 4 grid, hidden parts painted with the
  background colour).
- `occlusion`: how much the image-text cosine drops when a 2 x 2-patch window
  is painted over with the image's background colour, floored at 0, averaged
  over the windows covering each patch (one forward pass per window: model-
  agnostic and faithful, the slowest). The default: on emoji with a LiT-style
  model (ViT trained from scratch, 8 x 8 patches) it was the one that lit the
  object and left the background dark on every example we looked at; the
  similarity maps (`value`, `tokens`) often light the plain background, where
  such a ViT parks global information.

Maps are (gh, gw) grids; `upsample` brings them to pixels for the overlay.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor, nn

from data_tools.atomic_write import write_json_atomic
from data_tools.errors import DataError
from data_tools.loader import LoaderConfig, make_loader
from evaluate.errors import EvaluateError
from evaluate.plots import save_png
from pretrain.vision_tower import vision_tower

if TYPE_CHECKING:
    from pretrain.encoder import Encoder

HeatmapMethod = Literal["value", "tokens", "gradcam", "occlusion", "rise"]
METHODS: tuple[HeatmapMethod, ...] = ("value", "tokens", "gradcam", "occlusion", "rise")


def _grid(visual: nn.Module, scores: Tensor) -> Tensor:
    """Per-patch scores (B, P) -> (B, gh, gw) on the tower's patch grid."""
    return scores.reshape(scores.shape[0], *visual.grid_size)


def _before_last_block(visual: nn.Module, images: Tensor) -> Tensor:
    """Token sequence (B, 1+P, W) entering the last transformer block."""
    x = visual._embeds(images)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    return x


def _to_joint_space(visual: nn.Module, tokens: Tensor) -> Tensor:
    """Patch tokens (B, P, W) -> unit vectors (B, P, D) in the joint embedding space."""
    tokens = visual.ln_post(tokens)
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    return F.normalize(tokens.float(), dim=-1)


def _value_path_tokens(visual: nn.Module, x: Tensor) -> Tensor:
    """Last block's patch tokens from its value projection and output projection only. (B, P, W)"""
    block = visual.transformer.resblocks[-1]
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None:
        raise EvaluateError("the `value` heat map needs open_clip's standard ViT blocks; use `method` tokens")
    width = x.shape[-1]
    w_v = attn.in_proj_weight[2 * width :]  # (W, W): rows of the packed q, k, v projection
    b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    v = F.linear(block.ln_1(x), w_v, b_v)  # (B, 1+P, W)
    return attn.out_proj(v)[:, 1:]


def patch_text_maps(model: nn.Module, images: Tensor, text_features: Tensor,
                    method: HeatmapMethod = "occlusion") -> Tensor:
    """Per-patch match of each image with its text: images (B, 3, H, W), text_features (B, D) -> (B, gh, gw).

    `value` and `tokens` give cosines in [-1, 1]; `gradcam` gives non-negative relevance.
    """
    visual = vision_tower(model)
    text = F.normalize(text_features.float(), dim=-1)  # (B, D)
    attribution = {"gradcam": _gradcam, "occlusion": _occlusion, "rise": _rise}.get(method)
    if attribution is not None:
        return attribution(model, visual, images, text)
    with torch.no_grad():
        x = _before_last_block(visual, images)
        if method == "value":
            patches = _value_path_tokens(visual, x)
        elif method == "tokens":
            patches = visual.transformer.resblocks[-1](x)[:, 1:]
        else:
            raise EvaluateError(f"unknown heat map method {method!r}; choose one of {', '.join(METHODS)}")
        joint = _to_joint_space(visual, patches)  # (B, P, D)
        return _grid(visual, torch.einsum("bpd,bd->bp", joint, text))


def _gradcam(model: nn.Module, visual: nn.Module, images: Tensor, text: Tensor) -> Tensor:
    # The pooled output reads the class token after the last block, so patch tokens only matter
    # through that block's attention: take activations and gradients at its input.
    with torch.enable_grad():
        x = _before_last_block(visual, images).detach().requires_grad_(True)  # (B, 1+P, W)
        pooled, _ = visual._pool(visual.transformer.resblocks[-1](x))
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        score = (F.normalize(pooled.float(), dim=-1) * text).sum()
        (grad,) = torch.autograd.grad(score, x)
    activations, grad = x[:, 1:].detach(), grad[:, 1:]  # (B, P, W)
    weights = grad.mean(dim=1, keepdim=True)  # (B, 1, W)
    cam = torch.relu((activations * weights).sum(dim=-1))  # (B, P)
    return _grid(visual, cam)


@torch.no_grad()
def _occlusion(model: nn.Module, visual: nn.Module, images: Tensor, text: Tensor, window: int = 2) -> Tensor:
    # Fill with the image's own background (median border pixel): an occluded region then looks
    # like empty background rather than a new grey object. Windows of `window` x `window` patches,
    # stride one patch, so a part larger than one patch is removed whole; each patch's score is the
    # mean drop over the windows covering it.
    gh, gw = visual.grid_size
    ph, pw = visual.patch_size
    size = max(1, min(window, gh, gw))
    # windows may hang over the edge, so every patch is covered by exactly size x size of them
    corners = [(r, c) for r in range(1 - size, gh) for c in range(1 - size, gw)]
    maps = []
    for image, target in zip(images, text):
        fill = _background_fill(image)
        variants = image.repeat(len(corners), 1, 1, 1)  # (K, 3, H, W): one copy per window
        for k, (row, col) in enumerate(corners):
            variants[k, :, max(row, 0) * ph : (row + size) * ph, max(col, 0) * pw : (col + size) * pw] = fill
        features = F.normalize(model.encode_image(torch.cat([image[None], variants])).float(), dim=-1)
        scores = features @ target  # (1+K,)
        # how much the match drops without the window; a region whose removal helps is not where the text is
        drops = (scores[0] - scores[1:]).clamp_min(0)  # (K,)
        total = torch.zeros(gh, gw)
        for drop, (row, col) in zip(drops, corners):
            total[max(row, 0) : row + size, max(col, 0) : col + size] += drop
        maps.append(total / size**2)
    return torch.stack(maps)


def _background_fill(image: Tensor) -> Tensor:
    """(3, 1, 1): the median border pixel, so hidden regions look like empty background, not a grey object."""
    border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], dim=1)  # (3, 2H+2W)
    return border.median(dim=1).values[:, None, None]


@torch.no_grad()
def _rise(model: nn.Module, visual: nn.Module, images: Tensor, text: Tensor, masks: int = 400, cells: int = 4,
          keep: float = 0.5, chunk: int = 200, seed: int = 0) -> Tensor:
    # RISE (Petsiuk et al., 2018): show the model many random partial views (a coarse
    # `cells` x `cells` grid of kept cells, upsampled smoothly and shifted by a random sub-cell
    # offset, the rest painted with the background), and score each pixel by the mean cosine
    # of the views that showed it minus the mean over all views. Every region is judged at
    # many scales and in context, so large objects are found too (one small occluder barely
    # moves their match). Seeded: the same image gives the same map.
    _, height, width = images.shape[1:]
    cell_h, cell_w = -(-height // cells), -(-width // cells)
    generator = torch.Generator().manual_seed(seed)
    grid = (torch.rand(masks, 1, cells + 1, cells + 1, generator=generator) < keep).float()
    big = F.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear", align_corners=False)
    shifts = torch.randint(0, cell_h, (masks,), generator=generator), torch.randint(0, cell_w, (masks,), generator=generator)
    views = torch.stack([big[k, 0, dy : dy + height, dx : dx + width] for k, (dy, dx) in enumerate(zip(*shifts))])
    coverage = views.sum(dim=0).clamp_min(1e-6)  # (H, W): how much the views showed each pixel (any image)
    maps = []
    for image, target in zip(images, text):
        fill = _background_fill(image)
        scores = torch.cat([
            F.normalize(model.encode_image(image * part[:, None] + fill * (1 - part[:, None])).float(), dim=-1) @ target
            for part in views.split(chunk)])  # (masks,)
        heat = torch.einsum("k,khw->hw", scores - scores.mean(), views) / coverage
        maps.append(F.adaptive_avg_pool2d(heat[None, None], visual.grid_size)[0, 0])  # onto the patch grid
    return torch.stack(maps)


def upsample(heat: Tensor, size: tuple[int, int]) -> Tensor:
    """(gh, gw) -> (H, W) bilinear, so a patch's score spreads over its pixels smoothly."""
    return F.interpolate(heat[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def normalise(heat: Tensor) -> Tensor:
    """Min-max to [0, 1] (a constant map becomes all zeros)."""
    low, high = heat.min(), heat.max()
    return (heat - low) / (high - low) if high > low else torch.zeros_like(heat)


def overlay(image: Image.Image, heat: Tensor, alpha: float = 0.5) -> Image.Image:
    """The image with the [0, 1] heat map (any grid size) blended on top in the `jet` colour map."""
    rgb = image.convert("RGB")
    pixels = normalise(upsample(heat, (rgb.height, rgb.width))).numpy()  # (H, W)
    colours = colormaps["jet"](pixels)[..., :3]  # (H, W, 3)
    blended = (1 - alpha) * np.asarray(rgb, dtype=np.float32) / 255.0 + alpha * colours
    return Image.fromarray(np.clip(blended * 255.0, 0, 255).astype(np.uint8))


def foreground_mask(image: Image.Image, threshold: float = 40.0) -> Tensor:
    """(H, W) bool: pixels that differ from the border colour (median of the edge pixels) by > threshold.

    Emoji and product shots sit on a plain background, so this finds the object without labels.
    """
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32))  # (H, W, 3)
    background = _background_fill(pixels.permute(2, 0, 1))[:, 0, 0]  # (3,)
    return (pixels - background).abs().max(dim=-1).values > threshold


def object_focus(image: Image.Image, heat: Tensor) -> float | None:
    """Mean normalised heat on the object over the mean over the whole image (1 = no preference).

    None when the object covers almost nothing or almost everything, or the map is flat
    (the ratio says nothing then).
    """
    mask = foreground_mask(image)
    share = float(mask.float().mean())
    if not 0.02 < share < 0.98 or heat.max() <= heat.min():
        return None
    pixels = normalise(upsample(heat, tuple(mask.shape)))
    return float(pixels[mask].mean() / pixels.mean().clamp_min(1e-6))


def to_pil(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """A preprocessed (3, H, W) tensor back to the picture the model saw."""
    pixels = image.float() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return Image.fromarray((pixels.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def heatmap_sheet_png(images: Sequence[Image.Image], heats: Sequence[dict[str, Tensor]], titles: Sequence[str],
                      path: Path, *, scale: int = 4) -> Path:
    """A row per example: the image, then one overlay per heat map (column titles: their names)."""
    rows, columns = len(images), 1 + max(len(h) for h in heats)
    fig = Figure(figsize=(2.4 * columns, 2.6 * rows))
    for row, (image, maps, title) in enumerate(zip(images, heats, titles)):
        size = (image.width * scale, image.height * scale)
        panels = [("", image.convert("RGB"))] + [(name, overlay(image, heat)) for name, heat in maps.items()]
        for col, (name, panel) in enumerate(panels):
            ax = fig.add_subplot(rows, columns, row * columns + col + 1)
            ax.imshow(panel.resize(size, Image.NEAREST))
            ax.set_axis_off()
            ax.set_title(title[:40] if col == 0 else name, fontsize=8)
    return save_png(fig, path, dpi=100)


def pick_samples(encoder: Encoder, data: str, count: int, spread: bool = True) -> dict[str, Any]:
    """`count` samples (image, caption, key), evenly spaced through the shards or the first ones."""
    try:
        loader = make_loader(data, LoaderConfig(batch_size=64, num_workers=0), image_transform=encoder.preprocess)
        step = max(1, (loader.num_samples or count) // count) if spread else 1
        samples = (sample for batch in loader for sample in zip(batch["image"], batch["caption"], batch["key"]))
        picked = list(itertools.islice(samples, 0, step * count, step))  # every `step`-th sample, `count` at most
    except DataError as exc:
        raise EvaluateError(str(exc)) from exc
    if not picked:
        raise EvaluateError(f"no readable sample in {data}")
    images, captions, keys = zip(*picked)
    return {"image": torch.stack(images), "caption": list(captions), "key": list(keys)}


def render_heatmaps(encoder: Encoder, data: str, out: Path, *, text: str | None = None, count: int = 8,
                    methods: Sequence[HeatmapMethod] = METHODS, spread: bool = True) -> dict[str, Any]:
    """Heat maps for `count` samples of `data` (evenly spread, or the first ones) against `text`
    (default: each sample's caption).

    Writes `out/heatmaps.png` (image + one overlay per method per row) and
    `out/heatmaps.json` (per sample: text, peak patch and object focus per method;
    mean object focus per method). Returns the JSON.
    """
    batch = pick_samples(encoder, data, count, spread)
    texts = [text] * len(batch["key"]) if text else batch["caption"]
    text_features = encoder.encode_text(texts)  # (B, D)
    maps = {m: patch_text_maps(encoder.model, batch["image"], text_features, m) for m in methods}  # (B, gh, gw)
    preprocess = encoder.config["preprocess"]
    pictures = [to_pil(image, preprocess["mean"], preprocess["std"]) for image in batch["image"]]
    rows = [{name: maps[name][i] for name in methods} for i in range(len(pictures))]
    heatmap_sheet_png(pictures, rows, texts, out / "heatmaps.png")
    samples = []
    for i, (picture, row) in enumerate(zip(pictures, rows)):
        entry: dict[str, Any] = {"key": batch["key"][i], "text": texts[i]}
        for name, heat in row.items():
            peak = divmod(int(heat.argmax()), heat.shape[1])  # (row, column) of the hottest patch
            entry[name] = {"peak_patch": list(peak), "object_focus": object_focus(picture, heat)}
        samples.append(entry)
    summary = {"checkpoint_id": encoder.checkpoint_id, "data": data, "samples": samples, "mean_object_focus": {
        name: _mean([s[name]["object_focus"] for s in samples]) for name in methods}}
    write_json_atomic(out / "heatmaps.json", summary)
    return summary


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
