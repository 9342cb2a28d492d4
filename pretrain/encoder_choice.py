"""Choosing the Encoder an evaluation command names, and checking it fits the shards.

Shared by `clipline zeroshot` and `clipline eval retrieval`: both take either
a checkpoint (a run or checkpoint dir) or an open_clip model name with optional weights.
"""

from __future__ import annotations

from typing import Any

from pretrain.errors import PretrainError


def check_choice(checkpoint: str | None, model: str | None, pretrained: str | None, *, required: bool = True) -> None:
    """A checkpoint or an open_clip model, not both (neither only when not `required`); weights only for a model."""
    if (checkpoint is not None and model is not None) or (required and checkpoint is None and model is None):
        raise PretrainError("pass exactly one of `checkpoint` RUN or `model` NAME [`pretrained` FILE]")
    if pretrained is not None and model is None:
        raise PretrainError("`pretrained` goes with `model`; a `checkpoint` already holds its weights")


def open_encoder(checkpoint: str | None, model: str | None, pretrained: str | None) -> Any:
    """The Encoder named by `checkpoint`, or by `model` [`pretrained`]."""
    from pretrain.encoder import Encoder  # torch model code loads only once the arguments are valid

    check_choice(checkpoint, model, pretrained)
    if checkpoint is not None:
        return Encoder.load(checkpoint)
    return Encoder.from_open_clip(model, pretrained=pretrained)


def check_image_size(encoder: Any, info: dict[str, Any], data: str, allow_resize: bool) -> None:
    """Refuse shards made at another resolution than the model's, unless told to rescale."""
    size = info.get("image_size")
    if size is None or allow_resize:
        return
    shard_size = int(max(size) if isinstance(size, (list, tuple)) else size)
    if shard_size != encoder.image_size:
        raise PretrainError(
            f"image size mismatch: shards at {data} are {shard_size} px (dataset.json image_size) but the model "
            f"expects {encoder.image_size} px; rebuild the shards with "
            f"`clipline data build ... --image-size {encoder.image_size}` or pass `allow_resize` to let the eval "
            "transform rescale them"
        )
