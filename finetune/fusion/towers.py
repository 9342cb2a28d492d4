"""Read pooled features and per-token features out of an open_clip model's two towers.

Fusion heads need more than the pooled embedding: cross-attention wants the image
patch tokens and the text tokens. open_clip returns tokens only when a tower's
`output_tokens` flag is set, and that flag changes what `encode_image` returns for
every other user of the model, so the towers are run here step by step instead.
Three text-tower layouts exist: `CLIP` keeps the text transformer's parts on the
model itself, `CustomTextCLIP` holds a `TextTransformer` or an `HFTextEncoder`
(e.g. the pretrained MiniLM) in `model.text`.
"""

from __future__ import annotations

from typing import Literal

from open_clip.hf_model import HFTextEncoder
from open_clip.transformer import TextTransformer, text_global_pool
from torch import Tensor, nn

from finetune.errors import FinetuneError
from pretrain.vision_tower import vision_tower

TowerMode = Literal["frozen", "last", "full"]


def encode_image_tokens(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """Run the ViT tower once and keep both outputs.

    Returns `image_features` (B, D) unnormalised projected pooled features (what
    `model.encode_image` returns) and `image_tokens` (B, P, W): the patch tokens
    after the final LayerNorm, in tower width W, without the class token.
    """
    visual = vision_tower(model)
    x = visual._embeds(images)  # (B, 1+P, W)
    x = visual.transformer(x)
    pooled, tokens = visual._pool(x)  # (B, W), (B, P, W)
    if visual.proj is not None:
        pooled = pooled @ visual.proj  # (B, D)
    return {"image_features": pooled, "image_tokens": tokens}


def encode_text_tokens(model: nn.Module, text: Tensor) -> dict[str, Tensor]:
    """Run the text tower once and keep pooled features, tokens and their mask.

    Returns `text_features` (B, D) (what `model.encode_text` returns), `text_tokens`
    (B, L, W) and `text_mask` (B, L) bool, True where a token is real (not padding).
    """
    tower = getattr(model, "text", None)
    if isinstance(tower, HFTextEncoder):
        mask = text != tower.config.pad_token_id
        out = tower.transformer(input_ids=text, attention_mask=mask.long())
        pooled = tower.proj(tower.pooler(out, mask.long()))
        return {"text_features": pooled, "text_tokens": out.last_hidden_state, "text_mask": mask}
    if isinstance(tower, TextTransformer):
        previous = tower.output_tokens
        tower.output_tokens = True  # TextTransformer's forward is plain Python, the flag is read per call
        try:
            pooled, tokens = tower(text)
        finally:
            tower.output_tokens = previous
        return {"text_features": pooled, "text_tokens": tokens, "text_mask": text != tower.pad_id}
    if tower is None and hasattr(model, "token_embedding"):
        return _encode_builtin_text(model, text)
    raise FinetuneError(f"unsupported text tower {type(tower).__name__}: expected an open_clip CLIP model")


def _encode_builtin_text(model: nn.Module, text: Tensor) -> dict[str, Tensor]:
    """`CLIP.encode_text`, keeping the token sequence (open_clip pads with id 0)."""
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype)  # (B, L, W)
    x = x + model.positional_embedding.to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    pooled = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, nn.Linear):
        pooled = model.text_projection(pooled)
    elif model.text_projection is not None:
        pooled = pooled @ model.text_projection
    return {"text_features": pooled, "text_tokens": x, "text_mask": text != 0}


def tower_widths(model: nn.Module) -> dict[str, int]:
    """Token widths and embedding size: `image` (W_v), `text` (W_t), `embed` (D)."""
    visual = vision_tower(model)
    tower = getattr(model, "text", None)
    if isinstance(tower, HFTextEncoder):
        text_width = tower.config.hidden_size
    else:
        text_width = (tower if tower is not None else model).transformer.width
    return {"image": visual.transformer.width, "text": text_width, "embed": visual.output_dim}


def _text_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module | nn.Parameter | None]]:
    """(ordered transformer blocks, what follows them: final norm and projection) of the text tower."""
    tower = getattr(model, "text", None)
    if isinstance(tower, HFTextEncoder):
        encoder = getattr(tower.transformer, "encoder", tower.transformer)
        return list(encoder.layer), [tower.proj]
    if isinstance(tower, TextTransformer):
        return list(tower.transformer.resblocks), [tower.ln_final, tower.text_projection]
    return list(model.transformer.resblocks), [model.ln_final, model.text_projection]


def set_towers_trainable(model: nn.Module, mode: TowerMode, blocks: int = 2) -> int:
    """Freeze the towers, unfreeze their last `blocks` blocks (+ final norm and projection), or all.

    Returns the number of trainable tower parameters. `logit_scale` stays frozen:
    classification heads do not use it.
    """
    for p in model.parameters():
        p.requires_grad = mode == "full"
    for name in ("logit_scale", "logit_bias"):
        if isinstance(getattr(model, name, None), nn.Parameter):
            getattr(model, name).requires_grad = False
    if mode == "last":
        visual = vision_tower(model)
        text_blocks, text_tail = _text_blocks(model)
        chosen: list[nn.Module | nn.Parameter | None] = [
            *(visual.transformer.resblocks[-blocks:] if blocks else []),
            visual.ln_post, visual.proj,
            *(text_blocks[-blocks:] if blocks else []), *text_tail,
        ]
        for item in chosen:
            if item is not None:  # a tower without a projection
                item.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

