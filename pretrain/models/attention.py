"""Self-attention computed with two explicit matmuls instead of the fused SDPA kernel.

Same function, same parameters (`in_proj_weight`, `out_proj` of
`nn.MultiheadAttention`, so state dicts do not change):

    q, k, v = x W_in^T + b_in            (B, L, 3C) split into H heads of C/H
    out = softmax(q k^T / sqrt(C/H) + mask) v,   then out_proj

Why: on CPU, torch's flash-attention kernel is slow for the short sequences
of small CLIP towers (65 image tokens, <= 32 text tokens): forward+backward
of a (128, 4, 65, 64) bf16 attention takes ~150 ms with it and ~25 ms as
explicit matmuls (measured on the 2-core AVX512-BF16 machine). For long
sequences the fused kernel wins; `use_explicit_attention` is only applied
where that does not hold (CPU, short context).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MAX_EXPLICIT_TOKENS = 256  # beyond this the (L, L) score matrices cost more than the fused kernel


class ExplicitSelfAttention(nn.MultiheadAttention):
    """`nn.MultiheadAttention` for batch-first self-attention, computed with explicit matmuls."""

    in_projection = staticmethod(F.linear)  # bias_fused_linear.py may set another, same values

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask=None,
                need_weights: bool = False, attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, None]:
        if not (query is key is value) or key_padding_mask is not None or need_weights or not self.batch_first:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        batch, length, width = query.shape
        heads = self.num_heads
        qkv = self.in_projection(query, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3C)
        q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, C/H)
        scores = (q * (1.0 / math.sqrt(width // heads))) @ k.transpose(-2, -1)  # (B, H, L, L)
        if attn_mask is not None:
            scores = scores + attn_mask.to(scores.dtype)
        weights = scores.softmax(dim=-1).to(v.dtype)
        out = (weights @ v).transpose(1, 2).reshape(batch, length, width)  # (B, L, C)
        return self.out_proj(out), None


def use_explicit_attention(model: nn.Module) -> int:
    """Switch every batch-first `nn.MultiheadAttention` in `model` to explicit matmuls; returns how many."""
    found = [m for m in model.modules() if type(m) is nn.MultiheadAttention and m.batch_first and m._qkv_same_embed_dim]
    for module in found:
        module.__class__ = ExplicitSelfAttention  # same parameters and buffers, another forward
    return len(found)


def explicit_attention_pays(device: torch.device, max_tokens: int) -> bool:
    """Whether explicit attention is the faster choice here (CPU, short sequences)."""
    return device.type == "cpu" and max_tokens <= MAX_EXPLICIT_TOKENS
