"""One optimizer step's forward and backward, with GradCache accumulation.

Plain accumulation (summing gradients of small batches) shrinks the
contrastive batch: each small batch only sees its own negatives. GradCache
(Gao et al. 2021) keeps the big batch exact at the cost of one extra forward:

1. forward every micro-batch without grad, keep only the features (B_i, D);
2. compute the loss on all cached features at once (the full contrastive
   batch) and backward to get d loss / d features (and d loss / d scale, bias);
3. forward each micro-batch again with grad (same RNG, so patch dropout picks
   the same patches) and backward the surrogate sum(features * cached grad).

The parameter gradient equals that of one batch of sum(B_i) pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from torch import nn

from pretrain.distributed import Distributed
from pretrain.rng_state import capture_rng, restore_rng

Batch = tuple[torch.Tensor, torch.Tensor]  # images (B, 3, H, W), tokens (B, L)
LossFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]
FEATURES = ("image_features", "text_features")
SCALARS = ("logit_scale", "logit_bias")


def forward_backward(model: nn.Module, micro_batches: Sequence[Batch], *, loss_fn: LossFn,
                     autocast: Callable[[], AbstractContextManager], dist: Distributed) -> torch.Tensor:
    """Accumulate parameter gradients for the whole step; return the (detached) loss."""
    if len(micro_batches) == 1:
        images, texts = micro_batches[0]
        with autocast():
            out = model(images, texts)
        loss = loss_fn(out)
        loss.backward()
        return loss.detach()
    outs, rng_states = [], []
    with torch.no_grad():  # pass 1: every micro-batch's features, no graph kept
        for images, texts in micro_batches:
            rng_states.append(capture_rng())
            with autocast():
                outs.append(model(images, texts))
    cached = as_leaves(outs)
    loss = loss_fn(cached)  # pass 2: the loss of the whole contrastive batch
    loss.backward()
    after_pass_one = capture_rng()
    start, last = 0, len(micro_batches) - 1
    for i, (images, texts) in enumerate(micro_batches):  # pass 3: each micro-batch again, with grad
        rows = slice(start, start + images.shape[0])
        start += images.shape[0]
        restore_rng(rng_states[i])
        # Only the last backward all-reduces gradients across ranks.
        with dist.no_sync(model, skip=i < last):
            with autocast():
                out = model(images, texts)
            surrogate(out, cached, rows, parts=len(micro_batches)).backward()
    restore_rng(after_pass_one)
    return loss.detach()


def as_leaves(outs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The parts' outputs joined into detached fp32 leaves that will receive the loss's gradients:
    features concatenated in part order (sum B_i, D), the shared scalars taken once."""
    cached = {k: torch.cat([o[k].detach() for o in outs]).float().requires_grad_() for k in FEATURES}
    for key in SCALARS:
        if key in outs[0]:
            cached[key] = outs[0][key].detach().float().requires_grad_()
    return cached


def surrogate(out: dict[str, torch.Tensor], cached: dict[str, torch.Tensor], rows: slice,
              parts: int) -> torch.Tensor:
    """A scalar whose backward through `out` (one part's outputs, rows `rows` of the batch) gives that
    part's parameter gradients of the loss whose gradients `cached` holds. The scalars (scale, bias) have
    the same value in each of the `parts`: each takes an equal share of their gradient."""
    total = sum((out[k].float() * cached[k].grad[rows]).sum() for k in FEATURES)
    for key in SCALARS:
        if key in cached:
            total = total + out[key].float() * cached[key].grad / parts
    return total
