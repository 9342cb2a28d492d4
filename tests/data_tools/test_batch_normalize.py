"""The evaluation transform split into per-image PIL steps and a per-batch normalisation gives the same values."""

from __future__ import annotations

import io

import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from torchvision import transforms

from data_tools.batch_normalize import BatchNormalize, split_eval_transform
from data_tools.loader import LoaderConfig, make_loader
from tests.data_tools.conftest import FIXTURE_SHARDS, image_bytes

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _batches(transform, batch_transform=None) -> list[torch.Tensor]:
    config = LoaderConfig(batch_size=20, num_workers=0, rank=0, world_size=1)
    loader = make_loader(FIXTURE_SHARDS, config, image_transform=transform, batch_transform=batch_transform)
    return [batch["image"] for batch in loader]


@pytest.mark.parametrize("size", [64, 40])
def test_split_open_clip_transform_gives_the_per_image_values_bit_for_bit(size: int) -> None:
    whole = image_transform_v2(PreprocessCfg(size=size), is_train=False)  # resize, crop, RGB, ToTensor, Normalize
    per_image, per_batch = split_eval_transform(whole)
    assert isinstance(per_batch, BatchNormalize) and per_batch.mean == pytest.approx(CLIP_MEAN)
    expected, got = _batches(whole), _batches(per_image, per_batch)
    assert sum(len(b) for b in got) == 48 and [b.shape for b in got] == [b.shape for b in expected]
    assert got[0].dtype == torch.float32 and all(torch.equal(a, b) for a, b in zip(expected, got))
    assert expected[0].std() > 0.5  # real pictures, not a constant


def test_split_handles_images_of_any_size_and_mode() -> None:
    whole = image_transform_v2(PreprocessCfg(size=32), is_train=False)
    per_image, per_batch = split_eval_transform(whole)
    images = [Image.open(io.BytesIO(image_bytes((250, 10, 40), (40, 30)))),
              Image.open(io.BytesIO(image_bytes((5, 200, 90), (30, 70), fmt="JPEG"))),
              Image.new("L", (33, 33), 77)]
    expected = torch.stack([whole(im) for im in images])
    assert per_batch is not None and torch.equal(per_batch(torch.stack([per_image(im) for im in images])), expected)


def test_other_transforms_are_kept_whole() -> None:
    normalise = transforms.Normalize(CLIP_MEAN, CLIP_STD)
    no_normalise = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    def plain(image):
        return normalise(transforms.functional.to_tensor(image))
    for transform in (plain, no_normalise, transforms.Compose([normalise])):
        assert split_eval_transform(transform) == (transform, None)


def test_a_per_image_part_that_is_not_rgb_says_so() -> None:
    per_image, _ = split_eval_transform(transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    with pytest.raises(ValueError, match="expected an RGB image before ToTensor, got L"):
        per_image(Image.new("L", (8, 8)))
