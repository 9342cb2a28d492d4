"""A clipline checkpoint loads with plain open_clip (the README's three lines) and embeds as `Encoder` does."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image

from pretrain import checkpoint, models
from pretrain.encoder import Encoder
from tests.conftest import save_random_checkpoint

CAPTIONS = ["a red heart", "grinning face with smiling eyes", "flag"]


@pytest.mark.parametrize("name", ["clip-tiny-64", "clip-tiny-64-minilm"])
def test_open_clip_builds_the_checkpoint_and_embeds_like_the_encoder(name: str, tmp_path: Path) -> None:
    # weights no fresh model has, so a load that silently skipped them would show
    run = save_random_checkpoint(tmp_path / "run", name, seed=1, step=3, adjust=lambda clip: [
        param.add_(0.01 * torch.randn_like(param)) for param in clip.parameters()])

    # what a plain open_clip user writes (README, "Loading a checkpoint with open_clip")
    configs = tmp_path / "open_clip_configs"
    configs.mkdir()
    (configs / "my-clipline.json").write_text(json.dumps(checkpoint.open_clip_config(run)))
    open_clip.add_model_config(configs)
    weights = checkpoint.find_latest(run) / "model.safetensors"
    model, _, preprocess = open_clip.create_model_and_transforms("my-clipline", pretrained=str(weights))
    tokenizer = open_clip.get_tokenizer("my-clipline")

    model.eval()
    encoder = Encoder.load(run)
    pictures = [Image.new("RGB", (80, 70), colour) for colour in ("red", "navy", "gold")]
    with torch.no_grad():
        ours_image = model.encode_image(torch.stack([preprocess(p) for p in pictures]), normalize=True)
        ours_text = model.encode_text(tokenizer(CAPTIONS), normalize=True)
    expected_image = encoder.encode_image(torch.stack([encoder.preprocess(p) for p in pictures]))
    assert torch.allclose(ours_image, expected_image, atol=1e-5)
    assert torch.allclose(ours_text, encoder.encode_text(CAPTIONS), atol=1e-5)
    assert not torch.allclose(ours_text, models.create_open_clip(name).eval().encode_text(
        tokenizer(CAPTIONS), normalize=True), atol=1e-3)  # the checkpoint's weights, not a fresh model's
