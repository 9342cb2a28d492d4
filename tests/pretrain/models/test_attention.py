"""Explicit-matmul attention computes what nn.MultiheadAttention computes, with the same weights."""

from __future__ import annotations

import copy

import open_clip
import torch
from torch import nn

from pretrain import models
from pretrain.models.attention import ExplicitSelfAttention, use_explicit_attention


def test_matches_multihead_attention_with_and_without_causal_mask() -> None:
    torch.manual_seed(0)
    fused = nn.MultiheadAttention(64, 4, batch_first=True)
    explicit = copy.deepcopy(fused)
    assert use_explicit_attention(explicit) == 1 and isinstance(explicit, ExplicitSelfAttention)
    x = torch.randn(3, 10, 64)
    causal = torch.full((10, 10), float("-inf")).triu(1)
    for mask in (None, causal):
        want = fused(x, x, x, need_weights=False, attn_mask=mask)[0]
        got = explicit(x, x, x, need_weights=False, attn_mask=mask)[0]
        assert torch.allclose(got, want, atol=1e-5)


def test_model_outputs_and_gradients_unchanged_and_state_dict_keys_kept() -> None:
    torch.manual_seed(1)
    fused = models.build_model("clip-tiny-64")
    explicit = models.build_model("clip-tiny-64", explicit_attention=True)
    explicit.load_state_dict(fused.state_dict())
    assert list(explicit.clip.state_dict()) == list(fused.clip.state_dict())
    images = torch.randn(4, 3, 64, 64)
    tokens = open_clip.get_tokenizer("clip-tiny-64")(["a cat", "a red car", "smiling face", "flag"])
    outs = []
    for towers in (fused, explicit):
        out = towers(images, tokens)
        (out["image_features"] @ out["text_features"].T).sum().backward()
        outs.append((out["text_features"], towers.clip.visual.transformer.resblocks[0].attn.in_proj_weight.grad))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-5)
