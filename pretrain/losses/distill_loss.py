"""Distillation from a teacher CLIP: similarity-matrix KL plus feature matching.

For a batch of N pairs, student unit features x_i, y_j (images, texts) with its
logit scale s, teacher unit features x'_i, y'_j with its scale s', and a
distillation temperature T:

    S_ij  = s  * <x_i,  y_j>            (student similarities, N x N)
    S'_ij = s' * <x'_i, y'_j>           (teacher similarities)
    p_i   = softmax_j(S'_ij / T),  q_i = softmax_j(S_ij / T)       (image -> text rows)
    p^i   = softmax_i(S'_ij / T),  q^i = softmax_i(S_ij / T)       (text -> image columns)

    L_kl   = T^2 / 2 * ( 1/N sum_i KL(p_i || q_i) + 1/N sum_j KL(p^j || q^j) )
    L_feat = 1/2 * 1/N sum_i ( (1 - cos(P x_i, x'_i)) + (1 - cos(P y_i, y'_i)) )
    L      = kl_weight * L_kl + feature_weight * L_feat

T^2 keeps the gradient scale independent of T (Hinton et al. 2015). P maps
student features to the teacher's embedding size: identity when they match,
else a learned linear map (`feature_projection`), trained with the student;
the KL term needs no P because both similarity matrices are N x N. The
teacher is a fixed function: its features carry no gradient. The loop adds L
to the student's own contrastive loss.

Across R ranks (B pairs each, N = R*B) pass `gather` (with gradient, as for
`clip_loss`): rank r computes its B image rows and B text columns against all
N, so the mean of the R rank losses equals L.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.errors import PretrainError
from pretrain.losses.clip_loss import Gather, identity

Projection = Callable[[torch.Tensor], torch.Tensor]


def feature_projection(student_dim: int, teacher_dim: int) -> nn.Linear | None:
    """P for L_feat: None when the sizes match, else a bias-free Linear(student_dim, teacher_dim).

    Its parameters must join the student's optimizer (they are part of what is trained).
    """
    if student_dim == teacher_dim:
        return None
    projection = nn.Linear(student_dim, teacher_dim, bias=False)
    nn.init.normal_(projection.weight, std=student_dim**-0.5)
    return projection


def _row_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher_row) || softmax(student_row))."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1),
                    log_target=True, reduction="batchmean")


def distill_loss(student_image: torch.Tensor, student_text: torch.Tensor, teacher_image: torch.Tensor,
                 teacher_text: torch.Tensor, student_logit_scale: torch.Tensor, teacher_logit_scale: torch.Tensor,
                 *, temperature: float = 1.0, kl_weight: float = 1.0, feature_weight: float = 1.0,
                 projection: Projection | None = None,
                 gather: Gather = identity) -> dict[str, torch.Tensor]:
    """L, L_kl and L_feat (see module docstring) as {"loss", "kl", "feature"}.

    Student features (B, D_s), teacher features (B, D_t), all unit vectors;
    logit scales are exp(t) as the models return them.
    """
    if temperature <= 0:
        raise PretrainError(f"distillation temperature must be > 0, got {temperature}")
    if feature_weight and projection is None and student_image.shape[1] != teacher_image.shape[1]:
        raise PretrainError(
            f"teacher embedding size {teacher_image.shape[1]} differs from the student's {student_image.shape[1]}: "
            "feature distillation needs a learned projection (feature_projection(student_dim, teacher_dim)), "
            "or set the feature weight to 0 to distil similarities only"
        )
    x, y = student_image.float(), student_text.float()  # (B, D_s)
    xt, yt = teacher_image.detach().float(), teacher_text.detach().float()  # (B, D_t)
    all_y, all_x = gather(y), gather(x)  # (N, D_s)
    all_yt, all_xt = gather(yt), gather(xt)  # (N, D_t)
    s, st = student_logit_scale.float() / temperature, teacher_logit_scale.float().detach() / temperature
    image_rows = _row_kl(st * xt @ all_yt.T, s * x @ all_y.T)  # (B, N) rows: image -> text
    text_rows = _row_kl(st * yt @ all_xt.T, s * y @ all_x.T)  # (B, N) rows: text -> image
    kl = temperature**2 * 0.5 * (image_rows + text_rows)
    loss = kl_weight * kl
    if feature_weight:
        project = projection if projection is not None else identity
        feature = 0.5 * ((1 - F.cosine_similarity(project(x), xt, dim=1)).mean()
                         + (1 - F.cosine_similarity(project(y), yt, dim=1)).mean())
        loss = loss + feature_weight * feature
    else:
        feature = torch.zeros((), device=x.device)
    return {"loss": loss, "kl": kl.detach(), "feature": feature.detach()}
