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
where that does not hold (CPU, short context). q, k and v are copied once into
heads-major order and q k^T is one `baddbmm` carrying the scale and the mask:
13.8 -> 10.3 ms for a (64, 65, 256) forward + backward on the Intel AMX host
against matmuls on 4-D permuted views (each copied), a separate scaling and a
separate mask addition.
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
        heads, head_dim = self.num_heads, width // self.num_heads
        qkv = self.in_projection(query, self.in_proj_weight, self.in_proj_bias)  # (B, L, 3C)
        # one copy into heads-major order, so every product below is a plain batched matmul on contiguous
        # operands (3 x (B*H, L, d)); its backward is one stack and one copy back
        q, k, v = qkv.view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).reshape(
            3, batch * heads, length, head_dim)
        # the scale is the matmul's alpha and the mask its added input (one pass fewer each)
        if attn_mask is None:
            added, beta = q.new_empty(()), 0  # beta 0: the input is ignored
        else:
            added, beta = attn_mask.to(q.dtype), 1
        scores = torch.baddbmm(added.expand(batch * heads, length, length), q, k.transpose(1, 2), beta=beta,
                               alpha=1.0 / math.sqrt(head_dim))  # (B*H, L, L)
        weights = scores.softmax(dim=-1).to(v.dtype)
        out = (weights @ v).view(batch, heads, length, head_dim).transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(out), None  # (B, L, C)


def use_explicit_attention(model: nn.Module) -> int:
    """Switch every batch-first `nn.MultiheadAttention` in `model` to explicit matmuls; returns how many."""
    found = [m for m in model.modules() if type(m) is nn.MultiheadAttention and m.batch_first and m._qkv_same_embed_dim]
    for module in found:
        module.__class__ = ExplicitSelfAttention  # same parameters and buffers, another forward
    return len(found)


def explicit_attention_pays(device: torch.device, max_tokens: int) -> bool:
    """Whether explicit attention is the faster choice here (CPU, short sequences)."""
    return device.type == "cpu" and max_tokens <= MAX_EXPLICIT_TOKENS
