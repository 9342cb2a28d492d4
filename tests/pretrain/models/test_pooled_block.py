"""The last block computed for the pooled token only gives the plain model's features and gradients."""

from __future__ import annotations

import open_clip
import pytest
import torch

from pretrain import models
from pretrain.losses import clip_loss
from pretrain.models.pooled_block import pooled_block

CAPTIONS = ["a cat", "a red car with four wheels", "smiling face", "flag of a small island nation", "x"]


def _features_and_grads(towers: models.TwoTower, images: torch.Tensor, tokens: torch.Tensor):
    towers.zero_grad()
    out = towers(images, tokens)
    clip_loss(out["image_features"], out["text_features"], out["logit_scale"]).backward()
    grads = {name: p.grad.clone() for name, p in towers.named_parameters() if p.grad is not None}
    return out["image_features"].detach(), out["text_features"].detach(), grads


@pytest.mark.parametrize("explicit_attention", [False, True])
@pytest.mark.parametrize("dynamic_padding", [False, True])
def test_same_features_and_gradients_as_the_full_last_block(explicit_attention: bool, dynamic_padding: bool) -> None:
    torch.manual_seed(0)
    options = {"explicit_attention": explicit_attention, "dynamic_padding": dynamic_padding}
    plain = models.build_model("clip-tiny-64", pooled_last_block=False, **options)
    pooled = models.build_model("clip-tiny-64", pooled_last_block=True, **options)
    pooled.load_state_dict(plain.state_dict())
    assert pooled.pooled_image and pooled.pooled_text and not plain.pooled_image
    images = torch.randn(len(CAPTIONS), 3, 64, 64)
    tokens = open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS)
    want_img, want_txt, want_grads = _features_and_grads(plain, images, tokens)
    got_img, got_txt, got_grads = _features_and_grads(pooled, images, tokens)
    assert torch.allclose(got_img, want_img, atol=1e-5)
    assert torch.allclose(got_txt, want_txt, atol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name, want in want_grads.items():
        assert torch.allclose(got_grads[name], want, atol=1e-6, rtol=1e-4), name


def test_pooled_block_is_the_block_output_at_the_given_rows_with_a_causal_mask() -> None:
    torch.manual_seed(2)
    block = open_clip.transformer.ResidualAttentionBlock(32, 4)
    x = torch.randn(3, 7, 32)
    causal = torch.full((7, 7), float("-inf")).triu(1)
    rows = torch.tensor([6, 0, 3])
    want = block(x, attn_mask=causal)[torch.arange(3), rows]
    assert torch.allclose(pooled_block(block, x, rows, causal), want, atol=1e-5)
    assert torch.allclose(pooled_block(block, x, None), block(x)[:, 0], atol=1e-5)


def test_encoders_without_the_supported_pooling_keep_the_plain_path() -> None:
    towers = models.build_model("clip-rn-64", pooled_last_block=True)  # ResNet image tower: no last block to cut
    assert not towers.pooled_image and towers.pooled_text


def test_compiled_towers_give_the_eager_features() -> None:
    torch.manual_seed(3)
    eager = models.build_model("clip-tiny-64", explicit_attention=True, text_buckets=2)
    compiled = models.build_model("clip-tiny-64", explicit_attention=True, text_buckets=2)
    compiled.load_state_dict(eager.state_dict())
    models.compile_towers(compiled)
    images = torch.randn(2, 3, 64, 64)
    tokens = open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS[:2])
    with torch.no_grad():
        want, got = eager(images, tokens), compiled(images, tokens)
    assert torch.allclose(got["image_features"], want["image_features"], atol=1e-5)
    assert torch.allclose(got["text_features"], want["text_features"], atol=1e-5)
