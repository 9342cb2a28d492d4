"""Heat maps: the peak lands on the object, overlays and focus scores behave, the maps render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from evaluate.heatmap import (_before_last_block, _to_joint_space, _value_path_tokens, object_focus, overlay,
                              patch_text_maps, render_heatmaps, to_pil, upsample)
from pretrain.encoder import Encoder
from tests.finetune.fusion_fakes import tiny_checkpoint, tiny_clip

RED = torch.tensor([2.0, -1.0, -1.0])[:, None, None]  # a saturated colour in normalised pixel space


@pytest.mark.parametrize("method", ["value", "tokens"])
def test_peak_lands_on_the_object_when_the_text_is_its_feature(method: str) -> None:
    """Text embedding := the joint-space feature of red patches; a red square on grey must light up."""
    model = tiny_clip(0).eval()
    visual = model.visual
    with torch.no_grad():
        x = _before_last_block(visual, RED.expand(3, 64, 64)[None])
        patches = _value_path_tokens(visual, x) if method == "value" else visual.transformer.resblocks[-1](x)[:, 1:]
        text = _to_joint_space(visual, patches).mean(dim=1)  # (1, D)
    for top, left in [(0, 0), (0, 40), (40, 8), (32, 32), (16, 16)]:
        image = torch.zeros(1, 3, 64, 64)
        image[0, :, top : top + 24, left : left + 24] = RED
        heat = patch_text_maps(model, image, text, method)[0]
        assert heat.shape == (4, 4)
        peak = int(upsample(heat, (64, 64)).argmax())
        row, col = divmod(peak, 64)
        assert top <= row < top + 24 and left <= col < left + 24, (method, top, left, row, col)


def test_gradcam_and_occlusion_are_non_negative_grids() -> None:
    model = tiny_clip(1).eval()
    images, texts = torch.randn(2, 3, 64, 64), torch.randn(2, 32)
    for method in ("gradcam", "occlusion"):
        heat = patch_text_maps(model, images, texts, method)
        assert heat.shape == (2, 4, 4) and (heat >= 0).all() and heat.max() > 0, method


@torch.no_grad()
@pytest.mark.parametrize("method", ["occlusion", "rise"])
def test_occlusion_and_rise_find_the_patch_the_match_depends_on_reproducibly(method: str) -> None:
    model = tiny_clip(2).eval()
    image = torch.zeros(1, 3, 64, 64)
    image[0, :, 16:32, 32:48] = RED  # exactly patch (1, 2) of the 4 x 4 grid
    text = torch.nn.functional.normalize(model.encode_image(image), dim=-1)  # the text "is" this image
    heat = patch_text_maps(model, image, text, method)[0]
    assert heat.shape == (4, 4) and int(heat.argmax()) == 1 * 4 + 2  # hiding the red patch loses the most
    assert torch.equal(heat, patch_text_maps(model, image, text, method)[0])  # RISE: seeded masks
    if method == "occlusion":  # nothing to remove on a blank image
        assert (patch_text_maps(model, torch.zeros(1, 3, 64, 64), text, method) == 0).all()


def test_object_focus_and_overlay() -> None:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    image.paste((200, 30, 30), (8, 8, 32, 32))  # object in the top-left quarter-ish
    on_object = torch.zeros(4, 4)
    on_object[0:2, 0:2] = 1.0
    assert object_focus(image, on_object) > 2.0
    assert object_focus(image, 1.0 - on_object) < 0.6
    assert object_focus(image, torch.ones(4, 4)) is None  # a flat map says nothing
    blended = overlay(image, on_object)
    assert blended.size == image.size
    assert blended.getpixel((60, 60)) != image.getpixel((60, 60))  # cold colour over the background too
    restored = to_pil(torch.zeros(3, 8, 8), mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert restored.getpixel((0, 0)) == (128, 128, 128)


def test_render_heatmaps(emoji_shards: Path, tmp_path: Path) -> None:
    run = tiny_checkpoint(tmp_path / "ckpt")
    summary = render_heatmaps(Encoder.load(run), str(emoji_shards), tmp_path / "maps", count=3)
    assert (tmp_path / "maps" / "heatmaps.png").is_file()
    written = json.loads((tmp_path / "maps" / "heatmaps.json").read_text())
    assert written["samples"][0]["text"] == summary["samples"][0]["text"]
    assert set(summary["mean_object_focus"]) == {"value", "tokens", "gradcam", "occlusion", "rise"}
