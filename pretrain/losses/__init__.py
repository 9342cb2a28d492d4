"""Contrastive losses, one per file, each a pure function of tensors."""

from pretrain.losses.clip_loss import clip_loss
from pretrain.losses.multi_positive_loss import multi_positive_clip_loss
from pretrain.losses.siglip_loss import siglip_loss

__all__ = ["clip_loss", "multi_positive_clip_loss", "siglip_loss"]
