"""BatchAugment: the batched crop/background/normalise path matches the per-image path where both are exact,
and draws crops, zooms and backgrounds with the per-image path's distributions."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from data_tools.batch_augment import BatchAugment
from data_tools.image_ops import to_rgb_on
from data_tools.loader import LoaderConfig, make_loader
from tests.data_tools.conftest import drawing

MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
RAW = {"mean": (0.0,) * 3, "std": (1.0,) * 3}  # no normalisation: outputs are colours in [0, 1]
WHOLE_FRAME = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}  # the crop is the whole frame


def batch_of(augment: BatchAugment, images: list[Image.Image]) -> torch.Tensor:
    return augment(torch.stack([augment.per_image(image) for image in images]))


def test_whole_frame_crop_on_white_equals_flattening_then_normalising() -> None:
    augment = BatchAugment(size=32, mean=MEAN, std=STD, **WHOLE_FRAME)
    out = batch_of(augment, [drawing(), drawing().convert("RGB")])
    expected = TF.normalize(TF.to_tensor(to_rgb_on(drawing())), MEAN, STD)
    assert out.shape == (2, 3, 32, 32)
    assert torch.allclose(out[0], expected, atol=2e-2)  # 8-bit rounding of the half-transparent stripe
    assert torch.allclose(out[0][:, :8], expected[:, :8], atol=1e-5)  # exact where pixels are opaque or empty
    opaque = TF.normalize(TF.to_tensor(drawing().convert("RGB")), MEAN, STD)
    assert torch.allclose(out[1], opaque, atol=1e-5)


def test_crops_are_sub_windows_of_the_frame_resized_back() -> None:
    ramp = torch.linspace(0, 1, 64).expand(64, 64)  # brightness rises left to right
    image = TF.to_pil_image(torch.stack([ramp, ramp, ramp]))
    augment = BatchAugment(size=64, **RAW, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    torch.manual_seed(0)
    out = batch_of(augment, [image] * 64)
    spans = out[:, 0, 32, -1] - out[:, 0, 32, 0]  # a half-width crop spans about half the ramp
    assert torch.allclose(spans, torch.full_like(spans, 0.5), atol=0.03)
    starts = out[:, 0, 32, 0]
    assert starts.min() < 0.1 and starts.max() > 0.4  # crops placed all over the allowed range


def test_random_backgrounds_follow_the_shares_and_zoom_out_shrinks_transparent_drawings_only() -> None:
    augment = BatchAugment(size=32, **RAW, **WHOLE_FRAME, background="random")
    torch.manual_seed(0)
    corners = batch_of(augment, [drawing()] * 800)[:, :, 0, 0]  # (B, 3) the transparent corner
    white = (corners == 1).all(dim=1).float().mean()
    black = (corners == 0).all(dim=1).float().mean()
    assert 0.2 < white < 0.3 and 0.2 < black < 0.3
    assert len({tuple(c.tolist()) for c in corners}) > 300
    red = batch_of(augment, [drawing()])[0, :, 16, 16]
    assert torch.allclose(red, torch.tensor([200 / 255, 0.0, 0.0]), atol=1e-5)  # the drawing itself is kept

    zoomed = BatchAugment(size=32, **RAW, **WHOLE_FRAME, background="random", zoom_out_min=0.5, white=1.0, black=0.0)
    torch.manual_seed(1)
    out = batch_of(zoomed, [drawing()] * 200 + [drawing().convert("RGB")] * 200)
    red_share = ((out[:, 0] > 0.7) & (out[:, 1] < 0.1)).flatten(1).float().mean(dim=1)
    # the red square covers 1/4 of the frame; shrunk by z ~ U(0.5, 1) it covers z^2 / 4: E = 0.146, min 0.0625
    # (bilinear edges count a little less)
    assert 0.11 < red_share[:200].mean() < 0.16 and red_share[:200].min() >= 0.04
    assert torch.allclose(red_share[200:], torch.full((200,), 0.25))  # opaque images are not zoomed


def test_draws_repeat_under_a_seed_and_bad_settings_are_refused() -> None:
    augment = BatchAugment(size=32, mean=MEAN, std=STD, background="random", zoom_out_min=0.7)
    torch.manual_seed(3)
    first = batch_of(augment, [drawing()] * 4)
    torch.manual_seed(3)
    assert torch.equal(first, batch_of(augment, [drawing()] * 4))
    with pytest.raises(ValueError, match="scale"):
        BatchAugment(size=32, mean=MEAN, std=STD, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="zoom_out_min"):
        BatchAugment(size=32, mean=MEAN, std=STD, zoom_out_min=0.0)


def test_other_sizes_are_brought_to_the_square_frame() -> None:
    augment = BatchAugment(size=16, mean=MEAN, std=STD)
    assert augment.per_image(Image.new("L", (28, 40), 128)).shape == (4, 16, 16)
    assert augment.per_image(Image.new("L", (28, 40), 128))[3].min() == 255


@pytest.mark.parametrize("workers", [0, 1])
def test_the_loader_applies_the_batch_transform_to_each_stacked_batch(emoji_shards, workers: int) -> None:
    augment = BatchAugment(size=24, mean=MEAN, std=STD, background="random")
    loader = make_loader(emoji_shards,
                         LoaderConfig(batch_size=8, num_workers=workers, keep_alpha=True, drop_last=True),
                         image_transform=augment.per_image, batch_transform=augment)
    batches = list(loader)
    assert len(batches) == 6 and all(b["image"].shape == (8, 3, 24, 24) for b in batches)  # 48 fixture samples
    assert all(b["image"].dtype == torch.float32 for b in batches)
    low, high = (0 - max(MEAN)) / min(STD), (1 - min(MEAN)) / min(STD)
    assert all(low - 1e-4 <= float(b["image"].min()) and float(b["image"].max()) <= high + 1e-4 for b in batches)
