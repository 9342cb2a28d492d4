"""A BERT (MiniLM) text tower run on packed tokens: the server's text encode without padding rows.

A batch of fresh queries of different lengths, padded to its longest, spends
the padding fraction of every Linear/MLP FLOP on rows that are thrown away
(fresh-stream batches: ~7.6 token rows a query padded, ~6.5 real). Here the
real tokens of the batch are packed into one (N, C) matrix for the embeddings,
every Linear layer, GELU and LayerNorm; only attention, which mixes the tokens
of one query, sees the (B, H, L, L) padded layout the HF tower gives SDPA,
gathered from the packed q/k/v rows. Each real token's row goes through the
same kernels with the same weights and casts as in the padded forward (a
matmul row does not depend on the other rows), so the vectors are the padded
forward's bit for bit in fp32, and in bf16 on the AMD reference host; on an Intel
host with AMX, oneDNN's bf16 kernels round by the matmul's shape (cosine to the
padded vectors > 0.9999; tests/retrieval/serve/test_packed_text.py).
The layers run as one TorchScript function (`packed_layers`), outside the GIL.

Measured on the 2-core machine with other jobs running, 16 clients, fresh
stream, 20 s runs interleaved with the previous code: the server's CPU per
query 3.4-3.8 -> 2.6-2.7 ms (with the per-batch metadata lookup in
`Retriever.search_fields`); the text encode alone at 8 queries a batch,
one thread, 2.16 -> 1.70 ms a query.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any, List, Optional, Union

import torch
import torch.nn.functional as F
from open_clip.tokenizer import HFTokenizer
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
            and transformer.config._attn_implementation == "sdpa"  # the attention kernel `_run_layers` calls
            and all(m.bias is not None for m in transformer.encoder.modules() if isinstance(m, nn.Linear)))


def encode_texts_packed(encoder: Any, texts: list[str]) -> torch.Tensor:
    """`encoder.encode_text(texts)` computed by `encode_packed`: (Q, D) float32 unit vectors, the same
    bits (run in the same precision context as the caller's). Needs `supports_packing(encoder.model)`."""
    clip = encoder.model
    if not texts:
        return torch.zeros(0, encoder.embed_dim)
    tokens = tokenize_to_longest(encoder.tokenizer, list(texts)).to(encoder.device)  # (Q, L <= context)
    with torch.no_grad():
        # the chunks and trimmed lengths of `Encoder.encode_tokens`, so attention sees the same shapes
        features = run_length_sorted(functools.partial(encode_packed, clip), tokens, clip.text.config.pad_token_id,
                                     chunk=TEXT_BATCH)  # (Q, D)
        features = F.normalize(features, dim=-1)  # as TwoTower.encode_text
    if features.dtype != torch.float32:  # as Encoder: under bf16 autocast, normalised in fp32 again
        features = F.normalize(features.float(), dim=-1)
    return features


def tokenize_to_longest(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """`tokenizer(texts)` cut to the batch's longest caption: for open_clip's `HFTokenizer`, its ids
    padded only to the longest (61 -> 39 us a query at 8 queries; padding to the context and cutting
    it off again after was a third of the cost); any other tokenizer is called as it is. (Q, L)"""
    if (not isinstance(tokenizer, HFTokenizer) or tokenizer.tokenizer_mode == "clips"
            or tokenizer.strip_sep_token):
        return tokenizer(texts)
    cleaned = [tokenizer.clean_fn(text) for text in texts]  # as HFTokenizer.__call__
    return tokenizer.tokenizer(cleaned, return_tensors="pt", max_length=tokenizer.context_length,
                               padding="longest", truncation=True).input_ids


def encode_packed(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Unnormalised text features of `clip`'s BERT text tower for (B, L) tokens, computed on the
    non-pad tokens only. (B, L) -> (B, D)"""
    text = clip.text
    bert = text.transformer
    mask = tokens != text.config.pad_token_id  # (B, L)
    batch, length = tokens.shape
    rows = mask.reshape(-1).nonzero().squeeze(1)  # (N,) flat positions of the real tokens
    # (B*L,) the packed row of each padded slot; pads point one past the end, at a zero row (`_unpack`)
    slots = torch.full((batch * length,), len(rows), dtype=torch.long, device=tokens.device)
    slots[rows] = torch.arange(len(rows), device=tokens.device)
    x = _embed(bert.embeddings, tokens.reshape(-1)[rows], rows % length)  # (N, C)
    # which keys each query attends to, as the boolean mask the HF tower hands SDPA
    key_mask = mask[:, None, None, :].expand(batch, 1, length, length).contiguous()  # (B, 1, L, L)
    attention = bert.encoder.layer[0].attention.self
    layer_tensors, prepacked = _layer_tensors(bert)
    x = packed_layers()(x, rows, slots, key_mask, batch, length, attention.num_attention_heads,
                        attention.attention_head_size, float(attention.scaling), float(text.config.layer_norm_eps),
                        layer_tensors, prepacked)  # (N, C)
    hidden = _unpack(x, slots)  # back to (B*L, C) for the pooler's own sum
    weights = mask.to(hidden.dtype)  # (B, L)
    pooled = (hidden.view(batch, length, -1) * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(-1, keepdim=True)
    return text.proj(pooled)  # (B, D)


def _embed(embeddings: nn.Module, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """BertEmbeddings for packed ids at their positions (token type 0). (N,) -> (N, C)"""
    x = embeddings.word_embeddings(ids) + embeddings.token_type_embeddings.weight[0]
    x = x + embeddings.position_embeddings(positions)
    return embeddings.LayerNorm(x)


def _run_layers(x: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, key_mask: torch.Tensor, batch: int,
                length: int, heads: int, head: int, scaling: float, eps: float, layers: List[List[torch.Tensor]],
                prepacked: bool) -> torch.Tensor:
    """Every BertLayer on packed rows, each as its modules compute it (`_layer_tensors` lists the
    tensors). Written for TorchScript (`packed_layers`). (N, C) -> (N, C)"""
    width = x.shape[1]
    for w in layers:
        qkv = _linear(x, w[0], w[1], prepacked)  # (N, 3C): the three projections side by side
        q, k, v = _unpack(qkv, slots).view(batch, length, 3, heads, head).permute(2, 0, 3, 1, 4).unbind(0)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=scaling)  # (B, H, L, d)
        context = context.transpose(1, 2).reshape(batch * length, heads * head)[rows]  # (N, C)
        x = F.layer_norm(_linear(context, w[2], w[3], prepacked) + x, [width], w[4], w[5], eps)
        hidden = F.gelu(_linear(x, w[6], w[7], prepacked))  # (N, 4C)
        x = F.layer_norm(_linear(hidden, w[8], w[9], prepacked) + x, [width], w[10], w[11], eps)
    return x


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, prepacked: bool) -> torch.Tensor:
    """`x W^T + b` as a Linear layer computes it under the caller's autocast (weights already in the dtype
    autocast would cast them to, `prepare_query_encoder`): prepacked bf16 weights through the oneDNN kernel
    autocast's bf16 matmul uses, others through `F.linear` with the input in the weights' dtype."""
    if prepacked:
        no_scalars = torch.jit.annotate(List[Optional[Union[int, float, complex]]], [])  # its `Scalar?[]` argument
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, bias, "none", no_scalars, "")
    return F.linear(x.to(weight.dtype), weight, bias)


def _unpack(packed: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """(N, W) packed rows -> (B*L, W), zeros at the pads: a row gather (~11 us at 8 queries) rather than
    a scatter into zeros (~38 us). The values are copies either way."""
    return F.embedding(slots, torch.cat([packed, packed.new_zeros(1, packed.shape[1])]))


_SCRIPTING = threading.Lock()


def packed_layers() -> Callable[..., torch.Tensor]:
    """`_run_layers` compiled by TorchScript once (~15 ms; the server does it at load), or the function
    itself where TorchScript cannot compile it. Thread-safe: the server's compute threads share it."""
    with _SCRIPTING:
        return _scripted_layers()


@functools.cache
def _scripted_layers() -> Callable[..., torch.Tensor]:
    """`_run_layers` compiled by TorchScript, or the function itself where TorchScript cannot compile it.

    The scripted stack runs its ~70 ops a batch in TorchScript's C++ interpreter, which releases the GIL
    while it runs: measured with two server threads encoding batches of 8 fresh queries, 1,135 -> 1,394
    queries/s (1.5 -> 1.35 ms of CPU a query), and 998 -> 1,220 with a third thread busy in Python as the
    event loop is. The same kernels on the same tensors: the same bits (tests/retrieval/serve/test_packed_text.py).
    torch.compile would fuse the LayerNorms and GELUs (other bits than the index's own vectors) and compile
    for each new batch shape at start; torch marks `torch.jit.script` deprecated, so its notice is silenced
    and any failure to script falls back to the plain function.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.script(_run_layers)
    except Exception:  # noqa: BLE001 - TorchScript missing or unable: the same maths in Python
        return _run_layers


PACK_ROWS = 64  # the row count oneDNN lays prepacked weights out for; any batch gets the same bits
_LAYER_TENSORS: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def _layer_tensors(bert: nn.Module) -> tuple[list[list[torch.Tensor]], bool]:
    """Per BertLayer, the 12 tensors `_run_layers` reads, and whether the linear weights are prepacked
    for oneDNN: q/k/v weight and bias side by side, attention output weight and bias, its LayerNorm's
    weight and bias, FFN in and FFN out weights and biases, their LayerNorm's weight and bias.

    Two measured savings, both the same bits on the AMD reference host (tests/retrieval/serve/test_packed_text.py):
    - q, k and v as one (N, C) x (C, 3C) matmul: each column comes out as in its own layer's matmul
      (checked for N from 5 to 700), with two matmul calls and two scatters fewer per layer;
    - bf16 weights are handed to oneDNN prepacked once, instead of being repacked on every call:
      10-30 % less time per matmul at the 30-60 packed rows of a server batch.
    Cached per tower and rebuilt when a weight is replaced or changed in place.
    """
    layers = bert.encoder.layer
    stamp = tuple((t.data_ptr(), t._version, t.dtype) for layer in layers for t in layer.parameters())
    cached = _LAYER_TENSORS.get(bert)
    if cached is not None and cached[0] == stamp:
        return cached[1], cached[2]
    prepacked = all(_prepacks(m.weight) for m in bert.encoder.modules() if isinstance(m, nn.Linear))
    tensors = []
    with torch.no_grad():  # one layer's own tensors are used as they are (no copy)
        for layer in layers:
            attention = layer.attention.self
            first_norm, second_norm = layer.attention.output.LayerNorm, layer.output.LayerNorm
            tensors.append([*_linear_tensors((attention.query, attention.key, attention.value), prepacked),
                            *_linear_tensors((layer.attention.output.dense,), prepacked),
                            first_norm.weight.detach(), first_norm.bias.detach(),
                            *_linear_tensors((layer.intermediate.dense,), prepacked),
                            *_linear_tensors((layer.output.dense,), prepacked),
                            second_norm.weight.detach(), second_norm.bias.detach()])
    _LAYER_TENSORS[bert] = (stamp, tensors, prepacked)
    return tensors, prepacked


def _linear_tensors(linears: tuple[nn.Linear, ...], prepacked: bool) -> list[torch.Tensor]:
    """[weight, bias] of `linears` side by side ((sum of outs, C), (sum of outs,)), the weight prepacked if asked."""
    weight = _side_by_side([linear.weight for linear in linears])
    if prepacked:
        weight = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS)
    return [weight, _side_by_side([linear.bias for linear in linears])]


def _side_by_side(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].detach() if len(tensors) == 1 else torch.cat(tensors)


def _prepacks(weight: torch.Tensor) -> bool:
    """Whether `weight` goes to oneDNN prepacked: bf16 weights (`prepare_query_encoder`) on a CPU build with it."""
    return (weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
