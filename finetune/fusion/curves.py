"""Training and validation curves of a fusion run as one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from evaluate.plots import save_png


def curves_png(history: Sequence[dict], tasks: Sequence[str], path: Path, *, title: str) -> Path:
    """Left: train/val loss per epoch. Right: train/val top-1 per task per epoch."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(11, 4))
    loss_ax, acc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for split, style in (("train", "-"), ("val", "--")):
        if any(f"{split}_loss" in row for row in history):
            loss_ax.plot(epochs, [row.get(f"{split}_loss") for row in history], style, label=f"{split} loss")
        for task in tasks:
            key = f"{split}_top1/{task}"
            if any(key in row for row in history):
                acc_ax.plot(epochs, [row.get(key) for row in history], style, label=f"{split} {task}")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("weighted task loss")
    loss_ax.legend(fontsize=8)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("top-1 accuracy")
    acc_ax.set_ylim(0, 1)
    acc_ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_png(fig, path)
