"""Multi-positive symmetric InfoNCE: every pair of the same group is a positive.

CLIP's loss treats every other pair of the batch as a negative. When two
samples share a concept (two vendors' drawings of one emoji, or one caption
written for several images), that pushes apart what should be together. With
a group id g_i per pair (same id = same concept), the target of each row is
uniform over its positives, as in supervised contrastive learning (SupCon's
L_out, Khosla et al. 2020):

    P_ij = 1[g_i = g_j],   T_ij = P_ij / sum_k P_ik
    logits_ij = s * <x_i, y_j>,   s = min(exp(t), s_max)
    L = 1/2 * ( 1/N sum_i -sum_j T_ij log softmax_j(logits_ij)      (image -> text)
              + 1/N sum_j -sum_i T_ji log softmax_i(logits_ij) )    (text -> image)

Soft targets (`soft_weight` w > 0) spread a share w of each row's target over
the batch's captions by how close they are to the row's own caption, in the
text tower's space (features detached; with a locked text tower, its fixed
sense of words):

    T_ij = (1 - w) P_ij / sum_k P_ik + w softmax_j(<y_i, y_j> / tau)

so an image is pulled a little towards captions that mean nearly the same
("dog face" -> "wolf face"), and images of concepts never trained on land among
their semantic neighbours instead of wherever memorising put them.

With all groups distinct and w = 0, T is the identity and L is clip_loss exactly. Across
ranks the features and group ids are gathered (features with gradient); with
`local_loss` rank r computes only its own B rows against all N columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.losses.clip_loss import Gather, identity


def multi_positive_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                             groups: torch.Tensor, *, gather: Gather = identity, rank: int = 0,
                             local_loss: bool = False, max_logit_scale: float = 100.0, soft_weight: float = 0.0,
                             soft_temperature: float = 0.1) -> torch.Tensor:
    """Multi-positive InfoNCE of this rank's (B, D) unit features and (B,) int group ids, with a share
    `soft_weight` of soft caption-similarity targets; see module docstring."""
    scale = logit_scale.clamp(max=max_logit_scale).float()
    image_features, text_features = image_features.float(), text_features.float()  # (B, D)
    all_images, all_texts, all_groups = gather(image_features), gather(text_features), gather(groups)  # (N, D), (N,)
    if local_loss:
        batch = image_features.shape[0]
        own_groups = all_groups[rank * batch:(rank + 1) * batch]  # (B,)
        own_texts = text_features
        logits_per_image = scale * image_features @ all_texts.T  # (B, N)
        logits_per_text = scale * text_features @ all_images.T  # (B, N)
    else:
        own_groups, own_texts = all_groups, all_texts
        logits_per_image = scale * all_images @ all_texts.T  # (N, N)
        logits_per_text = logits_per_image.T
    positives = (own_groups[:, None] == all_groups[None, :]).float()  # (B or N, N)
    targets = positives / positives.sum(dim=1, keepdim=True)
    if soft_weight:
        with torch.no_grad():
            similar = torch.softmax(own_texts @ all_texts.T / soft_temperature, dim=1)  # (B or N, N)
        targets = (1 - soft_weight) * targets + soft_weight * similar
    return 0.5 * (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets))
