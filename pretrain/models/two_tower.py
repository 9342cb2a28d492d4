"""`TwoTower`, the module the loop trains: an open_clip model plus exact text-side speed-ups.

It is the model contract of the project:
`model(images, texts) -> dict(image_features, text_features, logit_scale[, logit_bias])`,
always a dict, features L2-normalised. It adds exact speed-ups:
- dynamic text padding: tokens are cut to the longest caption of the batch
  (exact for a causal text tower pooled at end-of-text, and for a HF tower with
  an attention mask);
- a locked HF text tower runs without grad in eval mode, and its pooled output
  is memoised per caption (LiT: the locked tower is a fixed function);
- the last block of each tower is computed for its pooled token only
  (pooled_block.py);
- captions can be split into length buckets, each trimmed to its own longest
  (length_buckets.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from pretrain.models.length_buckets import caption_lengths, round_up, run_bucketed
from pretrain.models.pooled_block import (
    encode_image_pooled,
    pooled_block,
    run_all_but_last,
    supports_pooled_block,
    supports_pooled_image,
)

# Pooled outputs memoised for a locked HF text tower; bounded so a large
# corpus cannot grow memory without limit.
LOCKED_TEXT_CACHE_SIZE = 200_000
# batch_split.py may run parts of a batch on threads; one lock for every model keeps TwoTower deep-copyable
_LOCKED_TEXT_LOCK = threading.Lock()


def is_hf_text(clip: nn.Module) -> bool:
    return isinstance(getattr(clip, "text", None), open_clip.hf_model.HFTextEncoder)


def pad_token_id(clip: nn.Module) -> int:
    """The padding token id of the model's text tower."""
    if is_hf_text(clip):
        return int(clip.text.config.pad_token_id)
    text = getattr(clip, "text", clip)
    return int(getattr(text, "pad_id", 0))


def trim_padding(tokens: torch.Tensor, pad_id: int, multiple: int = 1) -> torch.Tensor:
    """Cut (B, L) tokens to the longest non-pad prefix, rounded up to `multiple`."""
    length = int(caption_lengths(tokens, pad_id).max()) if len(tokens) else 1
    return tokens[:, : min(tokens.shape[1], round_up(length, multiple))]


def supports_pooled_text(clip: nn.Module) -> bool:
    """Whether the text tower is an open_clip causal tower whose last block pooled_block.py can compute."""
    return (hasattr(clip, "token_embedding") and clip.text_pool_type in ("argmax", "eos")
            and supports_pooled_block(clip.transformer))


def supports_trimming(clip: nn.Module) -> bool:
    """Whether cutting padding leaves the text features unchanged for this tower."""
    if is_hf_text(clip):
        return True  # the HF adapter masks padding out of attention and pooling
    if hasattr(clip, "token_embedding"):  # open_clip CLIP: text parts on the model
        return clip.attn_mask is not None and clip.text_pool_type in ("argmax", "eos")
    return False


class TwoTower(nn.Module):
    """The trained module: an open_clip model plus exact text-side speed-ups.

    `self.clip` is the plain open_clip model; its state dict is what
    checkpoints hold, so they load with `open_clip.create_model(name)`.
    """

    def __init__(self, clip: nn.Module, *, name: str, dynamic_padding: bool = True,
                 pad_multiple: int = 1, pooled_last_block: bool = True, text_buckets: int = 1,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last  # images go to the image tower in NHWC order
        self.clip = clip
        self.name = name  # the open_clip config name checkpoints record
        self.dynamic_padding = dynamic_padding and supports_trimming(clip)
        # only where encode_image is open_clip's own `visual(images)` (not a wrapper that casts inputs)
        self.pooled_image = (pooled_last_block and isinstance(clip, (open_clip.CLIP, open_clip.CustomTextCLIP))
                             and supports_pooled_image(clip.visual))
        self.pooled_text = pooled_last_block and supports_pooled_text(clip)
        # length buckets need rows that never mix and features independent of padding: the trimmed causal path
        self.text_buckets = text_buckets if self.dynamic_padding and hasattr(clip, "token_embedding") else 1
        self.pad_multiple = pad_multiple
        self.pad_id = pad_token_id(clip)
        self._locked_text_cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    @property
    def text_locked(self) -> bool:
        """True when a HF text tower's transformer is frozen (its projection may train)."""
        return is_hf_text(self.clip) and not any(p.requires_grad for p in self.clip.text.transformer.parameters())

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)  # (B, 3, H, W), NHWC in memory
        if self.pooled_image:
            return F.normalize(encode_image_pooled(self.clip.visual, images), dim=-1)  # (B, D)
        return F.normalize(self.clip.encode_image(images), dim=-1)  # (B, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.text_buckets > 1:
            features = run_bucketed(self._encode_causal_text, tokens, self.pad_id, max_buckets=self.text_buckets,
                                    multiple=self.pad_multiple)
            return F.normalize(features, dim=-1)  # (B, D)
        if self.dynamic_padding:
            tokens = trim_padding(tokens, self.pad_id, self.pad_multiple)  # (B, L')
        if self.text_locked:
            features = self.clip.text.proj(self._locked_pooled(tokens))
        elif self.pooled_text or (self.dynamic_padding and hasattr(self.clip, "token_embedding")):
            features = self._encode_causal_text(tokens)
        else:
            features = self.clip.encode_text(tokens)
        return F.normalize(features, dim=-1)  # (B, D)

    def _encode_causal_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """`CLIP.encode_text` of an open_clip text tower for (B, L) tokens, any L <= context (unnormalised, (B, D)).

        With a causal mask, positions before end-of-text never see the padding, so
        slicing the positional embedding and mask to L gives the same features.
        With `pooled_text` the last block is computed for the pooled row only (pooled_block.py).
        """
        clip = self.clip
        length = tokens.shape[1]  # L <= context_length
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype)  # (B, L, W)
        x = x + clip.positional_embedding[:length].to(cast_dtype)
        mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]  # (L, L)
        eos_id = getattr(clip, "text_eos_id", None)
        if self.pooled_text:
            # (B,) the row `text_global_pool` keeps for each caption (argmax or eos pooling)
            rows = tokens.argmax(dim=-1) if clip.text_pool_type == "argmax" else (tokens == eos_id).int().argmax(dim=-1)
            x = run_all_but_last(clip.transformer, x, mask)
            x = clip.ln_final(pooled_block(clip.transformer.resblocks[-1], x, rows, mask))  # (B, W)
        else:
            x = clip.transformer(x, attn_mask=mask)
            x = clip.ln_final(x)
            x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=eos_id)  # (B, W)
        if isinstance(clip.text_projection, nn.Linear):
            return clip.text_projection(x)
        return x if clip.text_projection is None else x @ clip.text_projection  # (B, D)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {
            "image_features": self.encode_image(images),  # (B, D)
            "text_features": self.encode_text(texts),  # (B, D)
            "logit_scale": self.clip.logit_scale.exp(),  # ()
        }
        if self.clip.logit_bias is not None:
            out["logit_bias"] = self.clip.logit_bias
        return out

    @torch.no_grad()
    def _locked_pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled output of the frozen HF transformer, memoised per token row. (B, W)"""
        pad = self.clip.text.config.pad_token_id
        keys = [tuple(row[row != pad].tolist()) for row in tokens]  # same caption, same key at any length
        with _LOCKED_TEXT_LOCK:
            missing = [i for i, k in enumerate(keys) if k not in self._locked_text_cache]
            if missing:
                text = self.clip.text
                was_training = text.transformer.training
                text.transformer.eval()  # a frozen tower runs without dropout, as in LiT
                sub = tokens[missing]
                mask = (sub != text.config.pad_token_id).long()
                # in the step's precision: under bf16 autocast a miss costs ~0.6x the fp32 time (cosine to the
                # fp32 features > 0.9999), and a 10-minute emoji run fills ~15,000 captions
                pooled = text.pooler(text.transformer(input_ids=sub, attention_mask=mask), mask).float()
                text.transformer.train(was_training)
                for i, vec in zip(missing, pooled):
                    self._locked_text_cache[keys[i]] = vec
                while len(self._locked_text_cache) > LOCKED_TEXT_CACHE_SIZE:
                    self._locked_text_cache.popitem(last=False)
            return torch.stack([self._locked_text_cache[k] for k in keys])  # (B, W)
