"""Distillation from a trained teacher CLIP: its features for each step, and the loss against them.

The teacher is a finished run (or a checkpoint) loaded through `Encoder`:
frozen, in eval mode, run without grad under the run's autocast. It sees the
student's own batch: the same (augmented) images and the same captions,
re-tokenised with the teacher's tokenizer, so a teacher with a MiniLM text
tower can teach a student with open_clip's BPE tokenizer. When the teacher
was trained with other preprocessing, the student's image tensor is converted
rather than refused: re-normalised with the teacher's mean/std (exact) and
resized to its image size (bicubic).

The loss is `distill_loss` (similarity-matrix KL plus feature matching). A
teacher with another embedding size gets a learned projection of the student
features (`feature_projection`); it trains with the student, so its
parameters join the optimizer and its weights the checkpoint's train state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain import models
from pretrain.config import DistillConfig
from pretrain.encoder import Encoder
from pretrain.errors import PretrainError
from pretrain.losses.distill_loss import Gather, distill_loss, feature_projection
from pretrain.optim import param_groups

LOG = logging.getLogger("pretrain")
ImageAdapter = Callable[[torch.Tensor], torch.Tensor]


@dataclass(kw_only=True)
class TeacherFeatures:
    """The teacher's view of one step's contrastive batch (rows in micro-batch order)."""

    image: torch.Tensor  # (N, D_t) unit vectors
    text: torch.Tensor  # (N, D_t) unit vectors
    logit_scale: torch.Tensor  # () exp(t)


def _size(preprocess: dict[str, Any]) -> tuple[int, int]:
    size = preprocess["size"]
    return (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (int(size), int(size))


def image_adapter(student: dict[str, Any], teacher: dict[str, Any]) -> ImageAdapter:
    """Student-preprocessed images (B, 3, H, W) -> the teacher's input; identity when both agree.

    `student` and `teacher` are open_clip preprocess configs (size, mean, std).
    """
    size = _size(teacher)
    resize = _size(student) != size
    s_mean, s_std, t_mean, t_std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (
        student["mean"], student["std"], teacher["mean"], teacher["std"]))
    renormalise = not (torch.equal(s_mean, t_mean) and torch.equal(s_std, t_std))
    if not resize and not renormalise:
        return lambda images: images
    changes = [f"resizing images to {size[0]}x{size[1]} (bicubic)"] if resize else []
    changes += ["re-normalising with its mean/std"] if renormalise else []
    LOG.info("teacher preprocessing differs from the student's: %s", ", ".join(changes))

    def adapt(images: torch.Tensor) -> torch.Tensor:
        if renormalise:  # undo the student's normalisation, apply the teacher's
            images = (images * s_std.to(images.device) + s_mean.to(images.device) - t_mean.to(images.device)) \
                / t_std.to(images.device)
        if resize:
            images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
        return images

    return adapt


class Distiller:
    """Teacher features for a step, and `distill_loss` of the student's outputs against them."""

    def __init__(self, config: DistillConfig, *, student: models.TwoTower, device: torch.device,
                 autocast: Callable[[], AbstractContextManager], gather: Gather) -> None:
        self.config, self.autocast, self.gather = config, autocast, gather
        # the frozen teacher; a path with no usable checkpoint is a PretrainError naming `distill.teacher`
        try:
            with torch.random.fork_rng(devices=[]):  # building it draws a random init: keep the run's own draws
                self.teacher = Encoder.load(str(config.teacher), device=device)
        except PretrainError as err:
            raise PretrainError(f"distill.teacher: {err}") from err
        self.teacher.model.requires_grad_(False)  # a fixed function (a MiniLM text tower then memoises its outputs)
        self.adapt_images = image_adapter(dict(student.clip.visual.preprocess_cfg), self.teacher.config["preprocess"])
        student_dim = int(models.model_config(student.name)["embed_dim"])
        # feature matching across embedding sizes needs a learned map (trained with the student)
        self.projection = feature_projection(student_dim, self.teacher.embed_dim) if config.feature_weight else None
        if self.projection is not None:
            self.projection.to(device)
            LOG.info("teacher embeds in %d dims, the student in %d: feature distillation through a learned "
                     "projection", self.teacher.embed_dim, student_dim)

    def parameters(self) -> list[nn.Parameter]:
        """What distillation itself trains (the projection, if any)."""
        return list(self.projection.parameters()) if self.projection is not None else []

    def add_to_optimizer(self, optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
        if self.projection is not None:
            for group in param_groups(self.projection, weight_decay):
                if group["params"]:
                    optimizer.add_param_group(group)

    def teach(self, images: Sequence[torch.Tensor], captions: Sequence[list[str] | None]) -> TeacherFeatures:
        """Teacher features for the step's micro-batches (images on the device, raw captions)."""
        if any(c is None for c in captions):
            raise PretrainError("distillation needs each batch's raw captions (key 'caption', as "
                                "data_tools.loader gives): the teacher tokenises them with its own tokenizer")
        with torch.no_grad(), self.autocast():
            image = torch.cat([self.teacher.encode_image(self.adapt_images(x)) for x in images])  # (N, D_t)
            text = torch.cat([self.teacher.encode_text(list(c)) for c in captions])  # (N, D_t)
            scale = self.teacher.model.logit_scale.exp().float()
        return TeacherFeatures(image=image, text=text, logit_scale=scale)

    def loss(self, out: dict[str, torch.Tensor], taught: TeacherFeatures) -> dict[str, torch.Tensor]:
        """`distill_loss` of the student outputs (the step's whole contrastive batch) against the teacher's."""
        cfg = self.config
        return distill_loss(out["image_features"], out["text_features"], taught.image, taught.text,
                            out["logit_scale"], taught.logit_scale, temperature=cfg.temperature,
                            kl_weight=cfg.kl_weight, feature_weight=cfg.feature_weight,
                            projection=self.projection, gather=self.gather)

    def state_dict(self) -> dict[str, Any]:
        return {"projection": self.projection.state_dict() if self.projection is not None else None}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        saved = (state or {}).get("projection")
        if (saved is None) != (self.projection is None):
            raise PretrainError("cannot resume: the checkpoint was written with a different distillation setup "
                                "(teacher embedding size or feature_weight); resume with the run's own config")
        if saved is not None:
            self.projection.load_state_dict(saved)
