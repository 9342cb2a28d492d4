"""RandomBackground: transparency flattened onto drawn backgrounds, zoom out, opaque images untouched."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from data_tools.augment import RandomBackground
from tests.data_tools.conftest import drawing


def corner_colours(augment: RandomBackground, n: int = 400) -> list[tuple[int, int, int]]:
    torch.manual_seed(0)
    return [augment(drawing()).getpixel((0, 0)) for _ in range(n)]


def test_background_shares_follow_the_settings() -> None:
    colours = corner_colours(RandomBackground(white=0.25, black=0.25))
    white = sum(c == (255, 255, 255) for c in colours) / len(colours)
    black = sum(c == (0, 0, 0) for c in colours) / len(colours)
    assert 0.18 < white < 0.32 and 0.18 < black < 0.32
    assert len(set(colours)) > 150  # the other half: colours drawn uniformly
    assert set(corner_colours(RandomBackground(white=1.0, black=0.0), n=20)) == {(255, 255, 255)}


def test_the_drawing_itself_is_kept_and_draws_repeat_under_a_seed() -> None:
    augment = RandomBackground()
    out = augment(drawing())
    assert out.mode == "RGB" and out.getpixel((16, 16)) == (200, 0, 0)
    assert corner_colours(augment, 10) == corner_colours(augment, 10)


def test_zoom_out_shrinks_the_drawing_somewhere_in_the_frame() -> None:
    torch.manual_seed(1)
    augment = RandomBackground(white=1.0, black=0.0, zoom_out_min=0.5)
    areas = []
    for _ in range(30):
        out = augment(drawing())
        areas.append(sum(r > 150 and g < 80 for r, g, _ in out.getdata()))  # red pixels
        assert out.size == (32, 32)
    assert max(areas) <= 16 * 16 + 40 and min(areas) < 0.5 * 16 * 16  # never larger, sometimes under half


def test_opaque_images_pass_through_unchanged() -> None:
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    assert RandomBackground(zoom_out_min=0.5)(image) is image


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RandomBackground(white=0.8, black=0.5)
    with pytest.raises(ValueError):
        RandomBackground(zoom_out_min=0.0)
