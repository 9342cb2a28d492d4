"""Fusion heads: turn an image and its text into one vector for the task heads.

Every head takes the same input dict (tower outputs plus which modality each
sample has) and returns one dict with `fused` (B, d) and, where the head has
them, `gate` (B, d) or `attention` (B, Q, K). A missing modality is a per-sample
flag, so one batch can mix full pairs, image-only and text-only samples; this is
how modality dropout trains the heads to cope with a missing input.

Inputs (names used throughout):
    image_features (B, D)  pooled image embedding (unnormalised tower output)
    text_features  (B, D)  pooled text embedding
    image_tokens   (B, P, Wv) patch tokens      -- attention head only
    text_tokens    (B, L, Wt) text tokens        -- attention head only
    text_mask      (B, L) bool, True for real tokens
    image_present, text_present (B,) bool
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

FusionKind = Literal["concat", "attention", "gated", "image", "text"]


@dataclass(kw_only=True)
class HeadConfig:
    fusion: FusionKind = "gated"
    """concat (+MLP), attention (image patch tokens attend to text tokens), gated (learned
    per-dimension gate), or a single-modality baseline: image, text."""
    hidden: int = 256
    """Width d of the fused vector."""
    attention_heads: int = 4
    """Heads of the cross-attention layer (attention fusion only); must divide `hidden`."""
    dropout: float = 0.1
    """Dropout inside the heads."""


def _project(width: int, hidden: int) -> nn.Sequential:
    # LayerNorm first: contrastive towers' raw features have arbitrary scale.
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden))


def _keep(x: Tensor, present: Tensor, missing: Tensor) -> Tensor:
    """x where the modality is present, else the learned `missing` vector. x: (B, ..., C)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(present.view(shape), x, missing.to(x.dtype).expand_as(x))


class SingleModalityHead(nn.Module):
    """Baseline: one modality's pooled feature, projected; the other modality is ignored."""

    def __init__(self, modality: Literal["image", "text"], embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.modality = modality
        self.project = _project(embed_dim, hidden)
        self.missing = nn.Parameter(torch.zeros(hidden))

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        fused = self.project(inputs[f"{self.modality}_features"])  # (B, d)
        return {"fused": _keep(fused, inputs[f"{self.modality}_present"], self.missing)}


class ConcatHead(nn.Module):
    """Early fusion: MLP over [image feature ; text feature]; a missing one is a learned vector."""

    def __init__(self, embed_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm_image, self.norm_text = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)
        self.missing_image = nn.Parameter(torch.zeros(embed_dim))
        self.missing_text = nn.Parameter(torch.zeros(embed_dim))
        self.mlp = nn.Sequential(nn.Linear(2 * embed_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden))

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        image = _keep(self.norm_image(inputs["image_features"]), inputs["image_present"], self.missing_image)
        text = _keep(self.norm_text(inputs["text_features"]), inputs["text_present"], self.missing_text)
        return {"fused": self.mlp(torch.cat([image, text], dim=-1))}  # (B, d)


class GatedHead(nn.Module):
    """fused = g * h_image + (1 - g) * h_text, g = sigmoid(W [image ; text]) per dimension.

    A missing modality forces the gate: g = 1 without text, g = 0 without an image,
    so an image-only input gives exactly h_image (the image-only head's output).
    """

    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.project_image = _project(embed_dim, hidden)
        self.project_text = _project(embed_dim, hidden)
        self.gate = nn.Sequential(nn.LayerNorm(2 * embed_dim), nn.Linear(2 * embed_dim, hidden))

    def forward(self, inputs: dict[str, Tensor], force_gate: float | None = None) -> dict[str, Tensor]:
        image_present, text_present = inputs["image_present"], inputs["text_present"]
        image = inputs["image_features"] * image_present[:, None]  # zeros where missing: no NaN/inf leaks
        text = inputs["text_features"] * text_present[:, None]
        h_image, h_text = self.project_image(image), self.project_text(text)  # (B, d)
        gate = torch.sigmoid(self.gate(torch.cat([image, text], dim=-1)))  # (B, d)
        if force_gate is not None:
            gate = torch.full_like(gate, force_gate)
        gate = torch.where(text_present[:, None], gate, torch.ones_like(gate))
        gate = torch.where(image_present[:, None], gate, torch.zeros_like(gate))
        return {"fused": gate * h_image + (1 - gate) * h_text, "gate": gate}


class CrossAttentionHead(nn.Module):
    """Image queries attend to text keys, then a feed-forward block; fused = mean over queries.

    Queries: the pooled image feature followed by the P patch tokens; keys/values:
    the pooled text feature followed by the L text tokens (padding masked). A
    missing image makes every query a learned null query; missing text leaves
    one learned null key. `attention` (B, 1+P, 1+L) is averaged over heads.
    """

    def __init__(self, embed_dim: int, widths: dict[str, int], hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.project_image = _project(embed_dim, hidden)
        self.project_patches = _project(widths["image"], hidden)
        self.project_text = _project(embed_dim, hidden)
        self.project_words = _project(widths["text"], hidden)
        self.null_query = nn.Parameter(torch.zeros(hidden))
        self.null_key = nn.Parameter(torch.zeros(hidden))
        self.norm_query = nn.LayerNorm(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * hidden, hidden))

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        image_present, text_present = inputs["image_present"], inputs["text_present"]
        queries = torch.cat([self.project_image(inputs["image_features"])[:, None],
                             self.project_patches(inputs["image_tokens"])], dim=1)  # (B, 1+P, d)
        queries = _keep(queries, image_present, self.null_query)
        text_global = self.project_text(inputs["text_features"])  # (B, d)
        text_global = _keep(text_global, text_present, self.null_key)
        keys = torch.cat([text_global[:, None], self.project_words(inputs["text_tokens"])], dim=1)  # (B, 1+L, d)
        always = torch.ones_like(text_present[:, None])  # the first key is never masked: no empty softmax
        valid = torch.cat([always, inputs["text_mask"] & text_present[:, None]], dim=1)  # (B, 1+L)
        attended, weights = self.attention(self.norm_query(queries), keys, keys, key_padding_mask=~valid,
                                           need_weights=True)  # (B, 1+P, d), (B, 1+P, 1+L)
        x = queries + attended
        x = x + self.ffn(self.norm_ffn(x))
        return {"fused": x.mean(dim=1), "attention": weights}


def build_head(config: HeadConfig, widths: dict[str, int]) -> nn.Module:
    """The head named by `config.fusion`; `widths` from `towers.tower_widths`."""
    embed, hidden = widths["embed"], config.hidden
    if config.fusion == "concat":
        return ConcatHead(embed, hidden, config.dropout)
    if config.fusion == "gated":
        return GatedHead(embed, hidden)
    if config.fusion == "attention":
        return CrossAttentionHead(embed, widths, hidden, config.attention_heads, config.dropout)
    return SingleModalityHead(config.fusion, embed, hidden)
