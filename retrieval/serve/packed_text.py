"""A BERT (MiniLM) text tower run on packed tokens: the server's text encode without padding rows.

A batch of fresh queries of different lengths, padded to its longest, spends
the padding fraction of every Linear/MLP FLOP on rows that are thrown away.
Here the real tokens of the batch are packed into one (N, C) matrix for the
embeddings, every Linear layer, GELU and LayerNorm; only attention, which
mixes tokens of one query, sees a (B, H, L, L) padded layout, built by
scattering the packed q/k/v rows. The same modules (same bf16 weights, same
autocast) compute each real token's row, so the vectors match the padded
forward's to bf16 rounding (tests/retrieval/serve/test_packed_text.py).
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.encoder import TEXT_BATCH
from pretrain.models import is_hf_text
from pretrain.models.length_buckets import run_length_sorted


def supports_packing(clip: nn.Module) -> bool:
    """Whether `clip`'s text tower is a plain BERT encoder (e.g. MiniLM) pooled by its mean, which
    `encode_packed` reproduces; anything else is encoded the ordinary way."""
    if not is_hf_text(clip):
        return False
    text = clip.text
    config = text.config
    transformer = text.transformer
    return (config.model_type == "bert" and type(text.pooler).__name__ == "MeanPooler"
            and not config.is_decoder and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and config.hidden_act == "gelu" and hasattr(transformer, "embeddings")
            and hasattr(transformer, "encoder") and not getattr(text, "output_tokens", False)
            and transformer.config._attn_implementation == "sdpa")  # the attention kernel `_attend` calls


def encode_texts_packed(encoder: Any, texts: list[str]) -> torch.Tensor:
    """`encoder.encode_text(texts)` computed by `encode_packed`: (Q, D) float32 unit vectors, the same
    bits (run in the same precision context as the caller's). Needs `supports_packing(encoder.model)`."""
    clip = encoder.model
    if not texts:
        return torch.zeros(0, encoder.embed_dim)
    tokens = encoder.tokenizer(list(texts)).to(encoder.device)  # (Q, context)
    with torch.no_grad():
        # the chunks and trimmed lengths of `Encoder.encode_tokens`, so attention sees the same shapes
        features = run_length_sorted(partial(encode_packed, clip), tokens, clip.text.config.pad_token_id,
                                     chunk=TEXT_BATCH)  # (Q, D)
        features = F.normalize(features, dim=-1)  # as TwoTower.encode_text
    if features.dtype != torch.float32:  # as Encoder: under bf16 autocast, normalised in fp32 again
        features = F.normalize(features.float(), dim=-1)
    return features


def encode_packed(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Unnormalised text features of `clip`'s BERT text tower for (B, L) tokens, computed on the
    non-pad tokens only. (B, L) -> (B, D)"""
    text = clip.text
    bert = text.transformer
    mask = tokens != text.config.pad_token_id  # (B, L)
    batch, length = tokens.shape
    rows = mask.reshape(-1).nonzero().squeeze(1)  # (N,) flat positions of the real tokens
    x = _embed(bert.embeddings, tokens.reshape(-1)[rows], rows % length)  # (N, C)
    # which keys each query attends to, as the boolean mask the HF tower hands SDPA
    key_mask = mask[:, None, None, :].expand(batch, 1, length, length).contiguous()  # (B, 1, L, L)
    for layer in bert.encoder.layer:
        x = _layer(layer, x, rows, batch, length, key_mask)  # (N, C)
    hidden = x.new_zeros(batch * length, x.shape[1])  # back to (B, L, C) for the pooler's own sum
    hidden[rows] = x
    weights = mask.to(hidden.dtype)  # (B, L)
    pooled = (hidden.view(batch, length, -1) * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(-1, keepdim=True)
    return text.proj(pooled)  # (B, D)


def _embed(embeddings: nn.Module, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """BertEmbeddings for packed ids at their positions (token type 0). (N,) -> (N, C)"""
    x = embeddings.word_embeddings(ids) + embeddings.token_type_embeddings.weight[0]
    x = x + embeddings.position_embeddings(positions)
    return embeddings.LayerNorm(x)


def _layer(layer: nn.Module, x: torch.Tensor, rows: torch.Tensor, batch: int, length: int,
           key_mask: torch.Tensor) -> torch.Tensor:
    """One BertLayer on packed rows. (N, C) -> (N, C)"""
    attention = layer.attention
    context = _attend(attention.self, x, rows, batch, length, key_mask)  # (N, C)
    out = attention.output
    x = out.LayerNorm(out.dense(context) + x)
    hidden = layer.intermediate.dense(x)
    hidden = F.gelu(hidden)
    return layer.output.LayerNorm(layer.output.dense(hidden) + x)


def _attend(self_attention: nn.Module, x: torch.Tensor, rows: torch.Tensor, batch: int, length: int,
            key_mask: torch.Tensor) -> torch.Tensor:
    """Multi-head self-attention of each query's own tokens; packed in and out. (N, C) -> (N, C)"""
    heads, head = self_attention.num_attention_heads, self_attention.attention_head_size
    qkv = F.linear(x, *_fused_qkv(self_attention))  # (N, 3C): the three projections' columns side by side
    padded = qkv.new_zeros(batch * length, qkv.shape[1])
    padded[rows] = qkv
    q, k, v = padded.view(batch, length, 3, heads, head).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, d)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                             scale=self_attention.scaling)  # (B, H, L, d)
    return context.transpose(1, 2).reshape(batch * length, heads * head)[rows]  # (N, C)


_FUSED_QKV: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def _fused_qkv(self_attention: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """([W_q; W_k; W_v], [b_q; b_k; b_v]) of a BertSelfAttention, concatenated once and rebuilt when a
    weight is replaced or changed in place.

    One (N, C) x (C, 3C) matmul gives each column the same bits as its own layer's (N, C) x (C, C) one
    (checked for N from 5 to 700 on this CPU and in the tests), and saves two matmul calls and two
    scatters per layer: ~100 us of a ~500 us attention block at 12 queries.
    """
    parts = (self_attention.query, self_attention.key, self_attention.value)
    stamp = tuple((t.data_ptr(), t._version, t.dtype) for p in parts for t in (p.weight, p.bias))
    cached = _FUSED_QKV.get(self_attention)
    if cached is None or cached[0] != stamp:
        with torch.no_grad():
            cached = (stamp, torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts]))
        _FUSED_QKV[self_attention] = cached
    return cached[1], cached[2]
