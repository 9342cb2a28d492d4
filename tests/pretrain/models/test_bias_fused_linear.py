"""Linear layers with the bias inside the CPU bf16 matmul: the values and gradients of autocast's `F.linear`."""

from __future__ import annotations

import open_clip
import pytest
import torch
from torch import nn

from pretrain import models
from pretrain.models import bias_fused_linear
from pretrain.models.bias_fused_linear import BiasFusedLinear

CAPTIONS = ["a", "a cat", "a red car with four big wheels", "smiling face", "flag of a small island", "heart"]


def _step(towers: models.TwoTower, images: torch.Tensor, tokens: torch.Tensor, bf16: bool) -> dict:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = towers(images, tokens)
        loss = (out["image_features"] @ out["text_features"].t()).float().logsumexp(dim=1).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in towers.named_parameters() if p.grad is not None}
    return {"image": out["image_features"].detach(), "text": out["text_features"].detach(), **grads}


@pytest.mark.parametrize("bf16", [True, False])
def test_towers_with_the_bias_in_the_matmul_give_the_same_features_and_gradients(bf16: bool, monkeypatch) -> None:
    fused_calls = []
    fused_apply = bias_fused_linear._BiasFusedLinear.apply
    monkeypatch.setattr(bias_fused_linear._BiasFusedLinear, "apply",
                        lambda *args: fused_calls.append(1) or fused_apply(*args))
    torch.manual_seed(0)
    plain = models.build_model("clip-tiny-64", explicit_attention=True, text_buckets=2)
    fused = models.build_model("clip-tiny-64", explicit_attention=True, text_buckets=2)
    fused.load_state_dict(plain.state_dict())
    # 10 blocks (6 image, 4 text): out-projection, 2 MLP layers and the attention's input projection each
    assert models.use_bias_fused_linear(fused) == 10 * 4
    assert isinstance(fused.clip.visual.transformer.resblocks[0].mlp.c_fc, BiasFusedLinear)
    images = torch.rand(4, 3, 64, 64)
    tokens = open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS[:4])
    want, got = _step(plain, images, tokens, bf16), _step(fused, images, tokens, bf16)
    # under bf16 autocast every projection: image 5 blocks x 4 + pooled block 5 (q and k,v apart), text 3 x 4 + 5
    assert len(fused_calls) == (42 if bf16 else 0)
    assert want.keys() == got.keys() and len(want) > 50  # every trained tensor got a gradient on both sides
    for name in want:
        scale = float(want[name].abs().max())
        assert torch.allclose(got[name], want[name], atol=1e-5 * scale, rtol=0), name


def test_state_dict_is_unchanged() -> None:
    layer = nn.Linear(8, 4)
    keys = list(layer.state_dict())
    models.use_bias_fused_linear(layer)
    assert type(layer) is BiasFusedLinear and list(layer.state_dict()) == keys


def test_encoder_fuses_the_models_it_loads_with_the_same_vectors_and_leaves_a_trainers_model_alone(tmp_path) -> None:
    from pretrain.encoder import Encoder
    from tests.conftest import save_random_checkpoint

    loaded = Encoder.load(save_random_checkpoint(tmp_path / "run", "clip-tiny-64"))
    c_fc = loaded.model.visual.transformer.resblocks[0].mlp.c_fc
    assert type(c_fc) is BiasFusedLinear
    trainers = models.create_open_clip("clip-tiny-64")
    trainers.load_state_dict(loaded.model.state_dict())
    shared = Encoder.from_model(trainers, model_name="clip-tiny-64")  # in-loop evaluation: the trainer's model
    assert type(trainers.visual.transformer.resblocks[0].mlp.c_fc) is nn.Linear
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused_image, plain_image = loaded.encode_image(images), shared.encode_image(images)
        fused_text, plain_text = loaded.encode_text(CAPTIONS), shared.encode_text(CAPTIONS)
    assert torch.allclose(fused_image, plain_image, atol=2e-3) and torch.allclose(fused_text, plain_text, atol=2e-3)
    attention = loaded.model.visual.transformer.resblocks[0].attn
    assert attention.in_projection is bias_fused_linear.linear
    assert models.use_plain_linear(loaded.model) == 10 * 3  # out-projection and 2 MLP layers of 10 blocks
    assert type(c_fc) is nn.Linear and attention.in_projection is torch.nn.functional.linear
