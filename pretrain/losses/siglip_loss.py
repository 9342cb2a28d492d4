"""Sigmoid (SigLIP) pairwise loss with learnable temperature and bias.

For N pairs of unit vectors x_i (images), y_j (texts), s = exp(t) and bias b:

    z_ij = +1 if i == j (or, given group ids, if g_i == g_j) else -1
    L = -1/N sum_i sum_j log sigmoid( z_ij * (s * <x_i, y_j> + b) )

Each pair is an independent binary decision, so no softmax over the batch is
needed. Across R ranks (B pairs each, N = R*B) rank r scores its B images
against all N texts gathered WITH gradient, normalised by B: the mean of the
R rank losses equals L, and the data-parallel gradient average gives dL/dθ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.losses.clip_loss import Gather, identity


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor, *, gather: Gather = identity, rank: int = 0,
                groups: torch.Tensor | None = None) -> torch.Tensor:
    """Sigmoid loss of this rank's (B, D) images against all texts; see module docstring.

    `logit_scale` is exp(t) (as the model returns it), `logit_bias` is b; `groups` (B,) int ids
    make every pair of the same group a positive (None: only the matching pair).
    """
    image_features = image_features.float()  # (B, D)
    all_texts = gather(text_features.float())  # (N, D)
    batch = image_features.shape[0]
    logits = logit_scale.float() * image_features @ all_texts.T + logit_bias.float()  # (B, N)
    if groups is not None:
        signs = (groups[:, None] == gather(groups)[None, :]).float() * 2 - 1  # (B, N)
        return -F.logsigmoid(signs * logits).sum() / batch
    signs = -torch.ones_like(logits)
    positives = torch.arange(batch, device=logits.device)
    signs[positives, positives + rank * batch] = 1.0  # z_ij: +1 on this rank's matching pairs
    return -F.logsigmoid(signs * logits).sum() / batch
