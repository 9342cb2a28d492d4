"""Fusion heads and tower token extraction: exact identities a wrong implementation would break."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.model import CustomTextCLIP

from finetune.fusion.heads import (ConcatHead, CrossAttentionHead, GatedHead, HeadConfig, SingleModalityHead,
                                   build_head)
from finetune.fusion.towers import encode_image_tokens, encode_text_tokens, set_towers_trainable, tower_widths
from pretrain import models
from tests.finetune.fusion_fakes import TINY_CONFIG, tiny_clip

B, D, H = 5, 12, 8


def _inputs(seed: int = 0, image_present: list[bool] | None = None, text_present: list[bool] | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, 7, dtype=torch.bool)
    mask[:, 4:] = False  # three padding positions
    return {
        "image_features": torch.randn(B, D, generator=g), "text_features": torch.randn(B, D, generator=g),
        "image_tokens": torch.randn(B, 9, 10, generator=g), "text_tokens": torch.randn(B, 7, 6, generator=g),
        "text_mask": mask,
        "image_present": torch.tensor(image_present or [True] * B),
        "text_present": torch.tensor(text_present or [True] * B),
    }


def test_gated_head_without_text_is_exactly_the_image_only_head() -> None:
    torch.manual_seed(0)
    gated, image_only, text_only = GatedHead(D, H), SingleModalityHead("image", D, H), SingleModalityHead("text", D, H)
    image_only.project.load_state_dict(gated.project_image.state_dict())
    text_only.project.load_state_dict(gated.project_text.state_dict())
    missing_text = _inputs(text_present=[False] * B)
    out = gated(missing_text)
    assert torch.equal(out["gate"], torch.ones(B, H))
    torch.testing.assert_close(out["fused"], image_only(missing_text)["fused"])
    both = _inputs()
    torch.testing.assert_close(gated(both, force_gate=1.0)["fused"], image_only(both)["fused"])
    torch.testing.assert_close(gated(both, force_gate=0.0)["fused"], text_only(both)["fused"])
    # with both present the gate is learned, strictly between the two
    free = gated(both)
    assert ((free["gate"] > 0) & (free["gate"] < 1)).all()
    g = free["gate"]
    expected = g * gated.project_image(both["image_features"]) + (1 - g) * gated.project_text(both["text_features"])
    torch.testing.assert_close(free["fused"], expected)


def test_gated_head_without_image_uses_text_only_per_sample() -> None:
    torch.manual_seed(1)
    gated = GatedHead(D, H)
    inputs = _inputs(image_present=[False, True, False, True, True])
    out = gated(inputs)
    assert torch.equal(out["gate"][[0, 2]], torch.zeros(2, H))
    torch.testing.assert_close(out["fused"][0], gated.project_text(inputs["text_features"])[0])


def test_concat_and_single_heads_ignore_a_missing_modality() -> None:
    torch.manual_seed(2)
    concat = ConcatHead(D, H, dropout=0.0).eval()
    a, b = _inputs(seed=0, text_present=[False] * B), _inputs(seed=0, text_present=[False] * B)
    b["text_features"] = b["text_features"] * 100 + 3  # different text must not matter when text is missing
    torch.testing.assert_close(concat(a)["fused"], concat(b)["fused"])
    assert not torch.allclose(concat(_inputs(seed=0))["fused"], concat(a)["fused"])
    image_only = SingleModalityHead("image", D, H)
    gone = image_only(_inputs(image_present=[False] * B))["fused"]
    assert torch.equal(gone, torch.zeros(B, H))  # the learned "missing" vector starts at zero


def test_cross_attention_masks_padding_and_missing_modalities() -> None:
    torch.manual_seed(3)
    head = CrossAttentionHead(D, {"image": 10, "text": 6}, hidden=H, heads=2, dropout=0.0).eval()
    out = head(_inputs())
    weights = out["attention"]  # (B, 1+P, 1+L)
    assert weights.shape == (B, 10, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, 10))
    assert torch.equal(weights[..., 5:], torch.zeros(B, 10, 3))  # padded text tokens get no attention
    no_text_a, no_text_b = _inputs(seed=0, text_present=[False] * B), _inputs(seed=0, text_present=[False] * B)
    no_text_b["text_tokens"] = torch.randn_like(no_text_b["text_tokens"])
    no_text_b["text_features"] = torch.randn_like(no_text_b["text_features"])
    torch.testing.assert_close(head(no_text_a)["fused"], head(no_text_b)["fused"])
    assert torch.equal(head(no_text_a)["attention"][..., 1:], torch.zeros(B, 10, 7))  # only the null key
    no_image_a, no_image_b = _inputs(seed=0, image_present=[False] * B), _inputs(seed=0, image_present=[False] * B)
    no_image_b["image_tokens"] = torch.randn_like(no_image_b["image_tokens"])
    torch.testing.assert_close(head(no_image_a)["fused"], head(no_image_b)["fused"])


@pytest.mark.parametrize("fusion", ["concat", "attention", "gated", "image", "text"])
def test_build_head_gives_fused_vectors_of_the_configured_width(fusion: str) -> None:
    head = build_head(HeadConfig(fusion=fusion, hidden=H, attention_heads=2), {"embed": D, "image": 10, "text": 6})
    assert head(_inputs())["fused"].shape == (B, H)


@torch.no_grad()
def test_token_extraction_matches_the_towers_own_outputs() -> None:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    clip = tiny_clip(0)  # seeds the global RNG: the other two towers start the same every run
    custom = CustomTextCLIP(embed_dim=32, vision_cfg=TINY_CONFIG["vision_cfg"], text_cfg=TINY_CONFIG["text_cfg"])
    with models.quiet_model_building():
        minilm = models.create_open_clip("clip-tiny-64-minilm")
    for name, model in {"clip": clip, "custom_text": custom, "minilm": minilm}.items():
        model.eval()
        tokenizer_name = "clip-tiny-64-minilm" if name == "minilm" else "ViT-B-32"
        tokenizer = open_clip.get_tokenizer(tokenizer_name, context_length=16)
        text = tokenizer(["a red apple on a table", "dog"])
        words = encode_text_tokens(model, text)
        torch.testing.assert_close(words["text_features"], model.encode_text(text), msg=name)
        assert words["text_mask"].sum(1).tolist() == (text != models.pad_token_id(model)).sum(1).tolist()
        assert words["text_tokens"].shape[:2] == text.shape
        pixels = encode_image_tokens(model, images)
        torch.testing.assert_close(pixels["image_features"], model.encode_image(images), msg=name)
        gh, gw = model.visual.grid_size
        widths = tower_widths(model)
        assert pixels["image_tokens"].shape == (2, gh * gw, widths["image"])
        assert (gh * gw, widths["image"]) == ((64, 256) if name == "minilm" else (16, 32))  # 8 vs 16 px patches
        assert widths["text"] == (384 if name == "minilm" else 32)
        assert widths["embed"] == model.encode_image(images).shape[1]


def test_partial_unfreezing_trains_exactly_the_last_blocks_and_projections() -> None:
    model = tiny_clip(0)
    set_towers_trainable(model, "last", blocks=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in trainable)
    assert not any(n.startswith("visual.transformer.resblocks.0.") for n in trainable)
    assert any(n.startswith("transformer.resblocks.1.") for n in trainable)
    assert not any(n.startswith("transformer.resblocks.0.") for n in trainable)
    assert {"visual.proj", "text_projection", "visual.ln_post.weight", "ln_final.weight"} <= trainable
    assert "token_embedding.weight" not in trainable and "logit_scale" not in trainable
    assert set_towers_trainable(model, "frozen") == 0
    total = sum(p.numel() for n, p in model.named_parameters() if n != "logit_scale")
    assert set_towers_trainable(model, "full") == total
