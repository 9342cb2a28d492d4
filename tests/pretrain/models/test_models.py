"""Model registry, the dict contract, locking, and exact dynamic padding."""

from __future__ import annotations

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from pretrain import models
from pretrain.errors import PretrainError
from pretrain.losses import clip_loss

CAPTIONS = ["grinning face", "a red apple on a wooden table with a long shadow", "flag", "cat face with tears of joy"]


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_our_configs_are_registered_with_open_clip_at_import() -> None:
    names = open_clip.list_models()
    for name in ("clip-tiny-64", "clip-small-64", "clip-tiny-64-minilm", "clip-small-64-minilm"):
        assert name in names
    tiny = open_clip.get_model_config("clip-tiny-64")
    assert tiny["vision_cfg"]["patch_size"] == 8 and tiny["text_cfg"]["context_length"] == 32


def test_small_config_is_20_to_40m_parameters() -> None:
    count = sum(p.numel() for p in open_clip.create_model("clip-small-64").parameters())
    assert 20e6 <= count <= 40e6


def test_unknown_model_name_is_a_pretrain_error() -> None:
    with pytest.raises(PretrainError, match="unknown model 'clip-huge'"):
        models.build_model("clip-huge")


def test_forward_returns_dict_of_unit_features() -> None:
    towers = models.build_model("clip-tiny-64").eval()
    tokens = open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS)
    out = towers(torch.randn(4, 3, 64, 64), tokens)
    assert set(out) == {"image_features", "text_features", "logit_scale"}
    assert out["image_features"].shape == (4, 256) and out["text_features"].shape == (4, 256)
    assert torch.allclose(out["text_features"].norm(dim=-1), torch.ones(4), atol=1e-5)
    assert abs(float(out["logit_scale"].detach()) - 1 / 0.07) < 1e-3


def test_minilm_tower_loads_pretrained_weights_and_locks() -> None:
    towers = models.build_model("clip-tiny-64-minilm", lock_text=True)
    assert isinstance(towers.clip, open_clip.CustomTextCLIP) and towers.text_locked
    shipped = load_file(str(models.minilm_dir() / "model.safetensors"))
    key = next(k for k in shipped if k.endswith("encoder.layer.0.attention.self.query.weight"))
    ours = towers.clip.text.transformer.state_dict()["encoder.layer.0.attention.self.query.weight"]
    assert torch.equal(ours, shipped[key])
    # locked: only the image tower, the text projection and the temperature train
    expected = trainable(towers.clip.visual) + towers.clip.text.proj.weight.numel() + 1
    assert trainable(towers) == expected


def test_lock_image_tower_freezes_visual() -> None:
    towers = models.build_model("clip-tiny-64", lock_image=True)
    assert trainable(towers.clip.visual) == 0 and trainable(towers) > 0


@pytest.mark.parametrize("name", ["clip-tiny-64", "clip-tiny-64-minilm"])
def test_dynamic_padding_gives_the_full_padding_loss(name: str) -> None:
    torch.manual_seed(0)
    towers = models.build_model(name, lock_text=name.endswith("minilm")).eval()
    tokens = open_clip.get_tokenizer(name)(CAPTIONS)
    assert models.trim_padding(tokens, towers.pad_id).shape[1] < tokens.shape[1]
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        dynamic = towers(images, tokens)
        towers.dynamic_padding = False
        towers._locked_text_cache.clear()
        full = towers(images, tokens)
    assert torch.allclose(dynamic["text_features"], full["text_features"], atol=1e-5)
    loss_dynamic = clip_loss(dynamic["image_features"], dynamic["text_features"], dynamic["logit_scale"])
    loss_full = clip_loss(full["image_features"], full["text_features"], full["logit_scale"])
    assert abs(float(loss_dynamic) - float(loss_full)) < 1e-5


def test_trim_padding_rounds_up_to_multiple() -> None:
    tokens = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    assert models.trim_padding(tokens, 0).shape == (2, 3)
    assert models.trim_padding(tokens, 0, multiple=4).shape == (2, 4)


def test_sigmoid_variant_has_a_learnable_bias() -> None:
    towers = models.build_model("clip-tiny-64", init_logit_bias=-10.0)
    assert towers.name == "clip-tiny-64-sigmoid"
    out = towers(torch.randn(2, 3, 64, 64), open_clip.get_tokenizer(towers.name)(CAPTIONS[:2]))
    assert float(out["logit_bias"].detach()) == -10.0 and abs(float(out["logit_scale"].detach()) - 10.0) < 1e-4


def test_raw_minilm_variant_puts_images_in_minilm_space_with_no_text_projection() -> None:
    towers = models.build_model("clip-rn-64-minilm-raw", lock_text=True).eval()
    assert isinstance(towers.clip.text.proj, torch.nn.Identity) and towers.text_locked
    # locked: the whole text side is MiniLM's own sentence embedding; only the image tower and temperature train
    assert trainable(towers) == trainable(towers.clip.visual) + 1
    tokens = open_clip.get_tokenizer("clip-rn-64-minilm-raw")(CAPTIONS)
    out = towers(torch.randn(4, 3, 64, 64), tokens)
    assert out["image_features"].shape == (4, 384) and out["text_features"].shape == (4, 384)
    # the text features are MiniLM's mean-pooled sentence embeddings, normalised
    text = towers.clip.text
    mask = (tokens != text.config.pad_token_id).long()
    with torch.no_grad():
        pooled = text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
    assert torch.allclose(out["text_features"], torch.nn.functional.normalize(pooled, dim=-1), atol=1e-5)


def test_channels_last_image_tower_gives_the_same_features_and_gradients() -> None:
    assert models.convolutional_image_tower("clip-rn-64") and not models.convolutional_image_tower("clip-tiny-64")
    torch.manual_seed(0)
    plain = models.build_model("clip-rn-64")
    torch.manual_seed(0)
    nhwc = models.build_model("clip-rn-64", channels_last=True)
    conv = nhwc.clip.visual.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    images = torch.randn(4, 3, 64, 64)
    tokens = open_clip.get_tokenizer("clip-rn-64")(CAPTIONS)
    outs = [towers(images, tokens) for towers in (plain, nhwc)]
    assert torch.allclose(outs[0]["image_features"], outs[1]["image_features"], atol=1e-5)
    for towers, out in zip((plain, nhwc), outs):
        clip_loss(out["image_features"], out["text_features"], out["logit_scale"]).backward()
    assert torch.allclose(plain.clip.visual.conv1.weight.grad, conv.grad, atol=1e-5)
    # checkpoints hold plain contiguous tensors that load into either layout
    plain.clip.load_state_dict({k: v.contiguous() for k, v in nhwc.clip.state_dict().items()})
