"""The training loop of a fusion classifier: epochs over batches, modality dropout, best epoch.

A batch is `{"encoded": {...}, "targets": (B, T)}` (cached frozen-tower outputs)
or `{"image", "text", "targets"}` (towers run, and possibly trained, every step).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor

from finetune.fusion.config import FusionConfig
from finetune.fusion.model import FusionClassifier
from finetune.fusion.multitask import TaskLossWeighting, per_task_losses

Condition = Literal["both", "image_only", "text_only"]
CONDITIONS: tuple[Condition, ...] = ("both", "image_only", "text_only")
BatchSource = Callable[[], Iterable[dict]]  # a fresh pass over a split per call


def drop_modalities(batch: int, p: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(image_present, text_present) (B,) bool: each sample loses one modality with probability p."""
    dropped = torch.rand(batch, generator=generator) < p
    drop_image = torch.rand(batch, generator=generator) < 0.5
    return ~(dropped & drop_image), ~(dropped & ~drop_image)


def condition_mask(batch: int, condition: Condition) -> tuple[Tensor, Tensor]:
    """Presence flags for an evaluation condition (image_only = text missing at test time)."""
    ones = torch.ones(batch, dtype=torch.bool)
    return ones if condition != "text_only" else ~ones, ones if condition != "image_only" else ~ones


def _encoded(model: FusionClassifier, batch: dict) -> dict[str, Tensor]:
    return batch["encoded"] if "encoded" in batch else model.encode(batch["image"], batch["text"])


def run_epoch(model: FusionClassifier, weighting: TaskLossWeighting, batches: Iterable[dict], *,
              optimizer: torch.optim.Optimizer | None = None, modality_dropout: float = 0.0,
              generator: torch.Generator | None = None) -> dict[str, float]:
    """One pass; trains when `optimizer` is given. Returns mean weighted loss and top-1 per task."""
    tasks = list(model.classes)
    training = optimizer is not None
    model.train(training)
    if not any(p.requires_grad for p in model.towers.parameters()):
        model.towers.eval()  # frozen towers: no dropout noise in their features
    total_loss, correct, seen = 0.0, torch.zeros(len(tasks)), 0
    with torch.set_grad_enabled(training):
        for batch in batches:
            targets = batch["targets"]  # (B, T)
            size = len(targets)
            dropout = training and modality_dropout > 0  # else both present (classify's default)
            present = drop_modalities(size, modality_dropout, generator) if dropout else (None, None)
            out = model.classify(_encoded(model, batch), *present)
            loss = weighting(per_task_losses(out["logits"], targets, tasks))
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total_loss += loss.item() * size
            correct += torch.stack([(out["logits"][t].argmax(1) == targets[:, i]).sum() for i, t in enumerate(tasks)])
            seen += size
    prefix = "train" if training else "val"
    row = {f"{prefix}_loss": total_loss / max(seen, 1)}
    row |= {f"{prefix}_top1/{t}": float(correct[i]) / max(seen, 1) for i, t in enumerate(tasks)}
    return row


def make_optimizer(model: FusionClassifier, weighting: TaskLossWeighting, config: FusionConfig) -> torch.optim.AdamW:
    """AdamW: heads at `lr`, trainable tower parameters at `tower_lr`, task log-variances without decay."""
    head_params = [p for n, p in model.named_parameters() if not n.startswith("towers.") and p.requires_grad]
    tower_params = [p for p in model.towers.parameters() if p.requires_grad]
    groups = [{"params": head_params, "lr": config.lr, "weight_decay": config.weight_decay}]
    if tower_params:
        groups.append({"params": tower_params, "lr": config.tower_lr, "weight_decay": config.weight_decay})
    if config.task_weighting == "uncertainty":
        groups.append({"params": list(weighting.parameters()), "lr": config.lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def fit(model: FusionClassifier, weighting: TaskLossWeighting, train: BatchSource, val: BatchSource | None,
        config: FusionConfig, log: Callable[[dict], None]) -> list[dict]:
    """Train for `config.epochs`; leaves `model`/`weighting` at the best validation epoch.

    The best epoch has the highest mean validation top-1 over tasks (the last
    epoch when there is no validation split). Returns one row per epoch.
    """
    optimizer = make_optimizer(model, weighting, config)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    generator = torch.Generator().manual_seed(config.seed)
    tasks = list(model.classes)
    history, best_score, best_state = [], -1.0, None
    for epoch in range(1, config.epochs + 1):
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row |= run_epoch(model, weighting, train(), optimizer=optimizer,
                         modality_dropout=config.modality_dropout, generator=generator)
        if val is not None:
            row |= run_epoch(model, weighting, val())
        row |= {f"task_weight/{t}": w for t, w in weighting.effective_weights().items()}
        schedule.step()
        score = sum(row.get(f"val_top1/{t}", 0.0) for t in tasks) / len(tasks) if val is not None else epoch
        if score > best_score:
            best_score, row["best"] = score, True
            best_state = copy.deepcopy({"model": _trainable_state(model), "weighting": weighting.state_dict()})
        history.append(row)
        log(row)
    if best_state is not None:
        model.load_state_dict(best_state["model"], strict=False)
        weighting.load_state_dict(best_state["weighting"])
    return history


def _trainable_state(model: FusionClassifier) -> dict[str, Tensor]:
    """Head weights plus any tower weights that train (frozen towers never change)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: v for n, v in model.state_dict().items() if not n.startswith("towers.") or n in trainable}


@torch.no_grad()
def predict(model: FusionClassifier, batches: Iterable[dict], condition: Condition) -> dict[str, Tensor]:
    """Under a condition: {"logits": {task: (N, C_t)}, "targets": (N, T)} and, gated head, "gate" (N,) mean gate."""
    model.eval()
    logits: dict[str, list[Tensor]] = {t: [] for t in model.classes}
    targets, gates = [], []
    for batch in batches:
        image_present, text_present = condition_mask(len(batch["targets"]), condition)
        out = model.classify(_encoded(model, batch), image_present, text_present)
        for task in logits:
            logits[task].append(out["logits"][task])
        targets.append(batch["targets"])
        if "gate" in out:
            gates.append(out["gate"].mean(dim=1))
    result = {"logits": {task: torch.cat(values) for task, values in logits.items()}, "targets": torch.cat(targets)}
    if gates:
        result["gate"] = torch.cat(gates)
    return result
