"""WiSE-FT (Wortsman et al. 2022): interpolate zero-shot and fine-tuned weights.

    theta_alpha = (1 - alpha) * theta_zeroshot + alpha * theta_finetuned,  alpha in [0, 1]

alpha = 0 is the zero-shot model, alpha = 1 the fine-tuned one. Two variants:
- tower="head": theta is the linear head only (zero-shot s*T vs the linear probe)
  on frozen features;
- tower="image": theta is the image tower and the head, fine-tuned end to end
  (finetune.methods.full_finetune); every alpha is a different image tower.
The model at each alpha is returned in `curve` (the accuracy-vs-alpha figure);
the one kept is the best alpha on validation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

from finetune.methods.full_finetune import FullFinetuneConfig, encode_images, fit_full_finetune
from finetune.methods.linear_probe import LinearHead, LinearProbeConfig, fit_linear_probe
from finetune.methods.task import FewShotTask, FittedModel, TaskImages


@dataclass(kw_only=True)
class WiseFtConfig:
    """WiSE-FT settings."""

    tower: Literal["head", "image"] = "head"
    """Interpolate the linear head on frozen features, or the whole image tower and head."""
    alphas: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    """Mixing coefficients evaluated (0 = zero-shot, 1 = fine-tuned)."""
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    """Fine-tuned head for tower="head"."""
    full: FullFinetuneConfig = field(default_factory=FullFinetuneConfig)
    """End-to-end fine-tuning for tower="image"."""


def interpolate_state(zeroshot: dict[str, Tensor], finetuned: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """(1 - alpha) * zeroshot + alpha * finetuned for floating tensors; others from `finetuned`."""
    return {
        name: (1 - alpha) * zeroshot[name] + alpha * value if value.is_floating_point() else value
        for name, value in finetuned.items()
    }


def fit_wise_ft(task: FewShotTask, config: WiseFtConfig | None = None, images: TaskImages | None = None) -> FittedModel:
    """Fine-tune (head or image tower), then interpolate along config.alphas; keep the best on validation."""
    config = config or WiseFtConfig()
    zeroshot_head = LinearHead.zeroshot(task.zeroshot_weights, task.logit_scale)
    if config.tower == "head":
        finetuned = fit_linear_probe(task, config.probe)
    else:
        if images is None:
            raise ValueError("wise-ft with tower='image' needs the task's images")
        finetuned = fit_full_finetune(task, images, config.full)
    curve: dict[float, FittedModel] = {}
    for alpha in config.alphas:
        head_state = interpolate_state(zeroshot_head.state_dict(), finetuned.head.state_dict(), alpha)
        head = LinearHead(head_state["weight"], head_state["bias"])
        tower = None
        if finetuned.image_tower is not None:
            assert images is not None
            tower_state = interpolate_state(images.visual.state_dict(), finetuned.image_tower.state_dict(), alpha)
            tower = copy.deepcopy(images.visual)
            tower.load_state_dict(tower_state)
        val_x = task.val_x if tower is None else encode_images(tower, images.val)
        score = task.score(head(val_x).detach(), task.val_y)
        curve[alpha] = FittedModel(head=head, hyperparameters={"alpha": alpha}, val_score=score, image_tower=tower)
    best_alpha = max(curve, key=lambda a: (curve[a].val_score, -abs(a - 0.5)))
    best = curve[best_alpha]
    hyper = {"alpha": best_alpha, "tower": config.tower, "finetuned": finetuned.hyperparameters}
    return FittedModel(head=best.head, hyperparameters=hyper, val_score=best.val_score, image_tower=best.image_tower,
                       curve=curve)
