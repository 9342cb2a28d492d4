"""The towers a training run trains, built from its config: model, locks and the exact CPU speed-ups."""

from __future__ import annotations

import torch

from pretrain import models
from pretrain.config import TrainConfig
from pretrain.models.attention import explicit_attention_pays


def build_towers(config: TrainConfig, device: torch.device, *, sharded: bool, processes: int) -> models.TwoTower:
    """`config.model` as a `TwoTower` on `device`, in training mode (FSDP: `sharded`; `processes` in the run)."""
    cfg = config.model
    bias = config.loss.init_logit_bias if config.loss.kind == "siglip" else None
    towers = models.build_model(
        cfg.name, pretrained=cfg.pretrained, lock_text=cfg.lock_text,
        lock_text_unlocked_layers=cfg.lock_text_unlocked_layers, lock_image=cfg.lock_image,
        lock_image_unlocked_groups=cfg.lock_image_unlocked_groups, patch_dropout=cfg.patch_dropout,
        grad_checkpointing=cfg.grad_checkpointing, init_logit_bias=bias, dynamic_padding=cfg.dynamic_padding,
        pooled_last_block=cfg.pooled_last_block, text_buckets=cfg.text_buckets,
        pad_multiple=8 if config.compile else 1,  # few distinct text lengths: few recompiles
        explicit_attention=cfg.attention == "explicit" or (cfg.attention == "auto" and explicit_attention_pays(
            device, models.max_sequence_length(cfg.name))),
        channels_last=cfg.channels_last if cfg.channels_last is not None else (
            models.convolutional_image_tower(cfg.name) and not sharded),  # FSDP needs contiguous weights
    ).to(device).train()
    if config.bias_fused_linear and device.type == "cpu" and not config.compile:
        models.use_bias_fused_linear(towers)
    if config.embedding_grad_in_place and processes == 1:  # DDP and FSDP want dense embedding gradients
        models.accumulate_embedding_grads_in_place(towers)
    return towers
