"""The ViT image tower of an open_clip model, for code that needs its patch tokens (heat maps, fusion heads)."""

from __future__ import annotations

from open_clip.transformer import VisionTransformer
from torch import nn

from pretrain.errors import PretrainError


def vision_tower(model: nn.Module) -> VisionTransformer:
    """The model's ViT image tower; PretrainError for other image towers (ResNet, timm)."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        raise PretrainError(
            f"the image tower is {type(visual).__name__}, fusion and heat maps need an open_clip "
            "VisionTransformer (patch tokens); use a ViT checkpoint"
        )
    return visual
