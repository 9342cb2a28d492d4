"""Symmetric InfoNCE (CLIP) loss with a learnable, clamped temperature.

For N pairs of unit vectors x_i (images) and y_j (texts) and s = min(exp(t), s_max):

    logits_ij = s * <x_i, y_j>
    L = 1/2 * ( 1/N sum_i -log softmax_j(logits_ij)[j=i]      (image -> text)
              + 1/N sum_j -log softmax_i(logits_ij)[i=j] )    (text -> image)

Across R ranks, each holding B pairs (N = R*B), features are gathered WITH
gradient, so every pair is a negative for every other pair of the global
batch. With `local_loss`, rank r only computes the rows of its own B pairs
against all N columns (labels offset by r*B): the mean of the R local losses
equals L, at 1/R of the logits memory; the data-parallel gradient average
then gives exactly dL/dθ.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]


def identity(tensor: torch.Tensor) -> torch.Tensor:
    """The gather of one process (nothing to gather), and any other no-op map."""
    return tensor


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, *,
              gather: Gather = identity, rank: int = 0, local_loss: bool = False,
              max_logit_scale: float = 100.0) -> torch.Tensor:
    """Symmetric InfoNCE of this rank's (B, D) unit features; see module docstring.

    `logit_scale` is exp(t) (as the model returns it); `gather` concatenates a
    tensor from all ranks along dim 0 with gradient (identity on one process).
    """
    scale = logit_scale.clamp(max=max_logit_scale).float()
    image_features, text_features = image_features.float(), text_features.float()  # (B, D)
    all_images, all_texts = gather(image_features), gather(text_features)  # (N, D)
    if local_loss:
        batch = image_features.shape[0]
        labels = torch.arange(batch, device=image_features.device) + rank * batch  # (B,)
        logits_per_image = scale * image_features @ all_texts.T  # (B, N)
        logits_per_text = scale * text_features @ all_images.T  # (B, N)
    else:
        labels = torch.arange(all_images.shape[0], device=image_features.device)  # (N,)
        logits_per_image = scale * all_images @ all_texts.T  # (N, N)
        logits_per_text = logits_per_image.T
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))
