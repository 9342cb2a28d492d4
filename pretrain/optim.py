"""AdamW with decay only on weight matrices, and the warmup + cosine schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pretrain.config import OptimConfig
from pretrain.distributed import is_sharded_tensor, shard_like

# Parameters that are not weight matrices even when 2-D: decaying them pulls
# positions, class token or temperature towards zero for no benefit.
NO_DECAY_NAMES = ("bias", "logit_scale", "logit_bias", "positional_embedding", "class_embedding", "cls_emb")
NORM_NAME_PARTS = ("ln_", "norm", "LayerNorm")
MAX_WARMUP_FRACTION = 0.1  # of a wall-clock budget


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether weight decay applies: matrices yes; norms, biases, temperature, positions no."""
    if param.ndim < 2 or any(n in name.rsplit(".", 1)[-1] for n in NO_DECAY_NAMES):  # leaf names like in_proj_bias
        return False
    return not any(part in name for part in NORM_NAME_PARTS)


def is_pretrained_text(name: str) -> bool:
    """A parameter of a pretrained (Hugging Face) text transformer, e.g. MiniLM's unlocked layers."""
    return name.startswith("text.transformer.") or ".text.transformer." in name


def param_groups(model: nn.Module, weight_decay: float, text_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups over the trainable parameters: decayed and not; with text_lr_scale != 1, the
    pretrained text transformer's trainable parameters in groups of their own (`lr_scale`)."""
    # (decays, lr-scaled) -> parameters, in the optimizer's group order; the two unscaled groups always exist
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (decay, scaled): [] for scaled in (False, True) for decay in (True, False)}
    for name, param in model.named_parameters():
        if param.requires_grad:
            scaled = text_lr_scale != 1.0 and is_pretrained_text(name)
            groups[(decays(name, param), scaled)].append(param)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0,
             **({"lr_scale": text_lr_scale} if scaled else {})}
            for (decay, scaled), params in groups.items() if params or not scaled]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    fused = device.type in ("cpu", "cuda") if cfg.fused is None else cfg.fused  # torch >= 2.4 fuses AdamW on both
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.text_lr_scale), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)


@dataclass(kw_only=True)
class WarmupCosine:
    """lr(step) = lr * (step+1)/warmup during warmup, then cosine from lr to min_lr.

    Progress through the cosine is counted in steps (`total_steps`) or, with
    a wall-clock budget, in seconds (`total_seconds`), so a timed run ends its
    schedule exactly when its budget runs out; a timed run's warmup also ends
    after MAX_WARMUP_FRACTION of the budget, whichever comes first.
    """

    lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    total_seconds: float | None = None
    warmup_end_seconds: float | None = None  # when warmup ended (time mode); saved for resume

    def warmup_progress(self, step: int, elapsed_s: float) -> float:
        """Fraction of warmup done; a timed run also ends warmup after 10% of its budget,
        so a slow machine still gets most of its budget on the cosine."""
        progress = (step + 1) / max(1, self.warmup_steps)
        if self.total_seconds is not None and self.warmup_end_seconds is None:
            progress = max(progress, elapsed_s / (MAX_WARMUP_FRACTION * self.total_seconds))
        return progress if self.warmup_end_seconds is None else 1.0

    def __call__(self, step: int, elapsed_s: float = 0.0) -> float:
        if self.warmup_steps > 0 and (warmup := self.warmup_progress(step, elapsed_s)) < 1.0:
            return self.lr * warmup
        if self.total_seconds is None:
            span = max(1, self.total_steps - self.warmup_steps)
            progress = (step - self.warmup_steps) / span
        else:
            if self.warmup_end_seconds is None:
                self.warmup_end_seconds = elapsed_s
            span = max(1e-9, self.total_seconds - self.warmup_end_seconds)
            progress = (elapsed_s - self.warmup_end_seconds) / span
        progress = min(max(progress, 0.0), 1.0)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict:
        return {"warmup_end_seconds": self.warmup_end_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.warmup_end_seconds = state.get("warmup_end_seconds")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)` (a whole, unsharded state), then each per-parameter state tensor
    split like its parameter where that is sharded (FSDP), else laid out in memory like it: a saved state is
    contiguous, and the fused AdamW kernel computes wrong updates when a channels-last parameter meets a
    contiguous moment tensor."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for param in group["params"]:
            saved = optimizer.state.get(param, {})
            for key, value in saved.items():
                if not torch.is_tensor(value) or value.shape != param.shape:
                    continue
                if is_sharded_tensor(param):
                    saved[key] = shard_like(value, param)
                elif value.stride() != param.stride():
                    saved[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)  # param's layout


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
