"""The last transformer block computed for the pooled token only: same features, less work.

A CLIP tower keeps one token of its last block's output: the class token
(ViT, `pool_type="tok"`) or the end-of-text token (causal text tower,
argmax/eos pooling). Every other row of that block's output is computed and
thrown away. This module computes the last block for the kept row only:

    h = ln_1(x)                                   (B, L, C)  all tokens: keys and values need them
    k, v = h W_k^T + b_k, h W_v^T + b_v           (B, L, C)
    q = h[i] W_q^T + b_q                          (B, 1, C)  only the pooled row i
    y = x[i] + out_proj(softmax(q k^T / sqrt(d) + mask[i]) v)
    y = y + mlp(ln_2(y))                          (B, C)

which is exactly the block's output at row i (rows do not mix after the
attention). On clip-tiny-64 it drops the queries, out-projection and MLP
of 64 of the 65 image tokens and of all but one text token in the last
layer: about 15% of a training step's FLOPs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, Transformer, VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint


def supports_pooled_block(transformer: nn.Module) -> bool:
    """Whether `transformer`'s last block is one this module can compute for one row."""
    if not isinstance(transformer, Transformer) or not transformer.batch_first or not len(transformer.resblocks):
        return False
    block = transformer.resblocks[-1]
    return (type(block) is ResidualAttentionBlock and not hasattr(block, "ln_1_kv")
            and isinstance(block.attn, nn.MultiheadAttention) and block.attn._qkv_same_embed_dim
            and block.attn.in_proj_bias is not None and block.attn.dropout == 0.0)


def run_all_but_last(transformer: Transformer, x: torch.Tensor,
                     attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`transformer.forward` without its last block (batch-first, (B, L, C) -> (B, L, C))."""
    for block in transformer.resblocks[:-1]:
        if transformer.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, None, None, attn_mask, use_reentrant=False)
        else:
            x = block(x, attn_mask=attn_mask)
    return x


def pooled_block(block: ResidualAttentionBlock, x: torch.Tensor, rows: torch.Tensor | None,
                 attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Output of `block` at one row per sample: `rows` (B,) indices, None = row 0. (B, L, C) -> (B, C)

    `attn_mask` (L, L) is the additive mask the block would get (causal for text).
    """
    batch, length, width = x.shape
    attn = block.attn
    heads = attn.num_heads
    head_dim = width // heads
    h = block.ln_1(x)  # (B, L, C)
    w_q, w_kv = attn.in_proj_weight[:width], attn.in_proj_weight[width:]
    b_q, b_kv = attn.in_proj_bias[:width], attn.in_proj_bias[width:]
    if rows is None:
        x_row, h_row = x[:, 0], h[:, 0]  # (B, C)
    else:
        at = torch.arange(batch, device=x.device)
        x_row, h_row = x[at, rows], h[at, rows]  # (B, C)
    linear = getattr(attn, "in_projection", F.linear)  # explicit attention's choice (bias_fused_linear.py)
    q = linear(h_row, w_q, b_q).view(batch, heads, 1, head_dim)  # (B, H, 1, d)
    k, v = linear(h, w_kv, b_kv).view(batch, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4)  # 2 x (B, H, L, d)
    scores = (q * (1.0 / math.sqrt(head_dim))) @ k.transpose(-2, -1)  # (B, H, 1, L)
    if attn_mask is not None:
        mask_rows = attn_mask[:1] if rows is None else attn_mask[rows]  # (1 or B, L)
        scores = scores + mask_rows.to(scores.dtype)[:, None, None, :]
    weights = scores.softmax(dim=-1).to(v.dtype)
    out = (weights @ v).reshape(batch, width)  # (B, C)
    y = x_row + block.ls_1(attn.out_proj(out))
    return y + block.ls_2(block.mlp(block.ln_2(y)))  # (B, C)


def supports_pooled_image(visual: nn.Module) -> bool:
    """Whether `visual` is an open_clip ViT pooled at its class token (the case `encode_image_pooled` covers)."""
    return (isinstance(visual, VisionTransformer) and visual.attn_pool is None and visual.pool_type == "tok"
            and not visual.output_tokens and supports_pooled_block(visual.transformer))


def encode_image_pooled(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """`visual(images)` with the last block computed for the class token only. (B, 3, H, W) -> (B, D)"""
    x = visual._embeds(images)  # (B, 1 + P, C)
    x = run_all_but_last(visual.transformer, x)
    pooled = visual.ln_post(pooled_block(visual.transformer.resblocks[-1], x, None))  # (B, C)
    return pooled if visual.proj is None else pooled @ visual.proj  # (B, D)
