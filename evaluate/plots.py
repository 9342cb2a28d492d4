"""Pictures for evaluation reports: confusion matrix, per-class recall, embedding map, recall@k.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot), so
plotting never touches a global backend or leaks figures in a long run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from data_tools.atomic_write import atomic_path

# Above these many classes, names no longer fit on an axis / cells can't hold numbers.
MAX_TICK_LABELS = 40
MAX_CELL_NUMBERS = 20
MAX_LEGEND_CLASSES = 20


def save_png(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write `fig` to `path` as a PNG cropped to its content, atomically (every report picture goes through here)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def confusion_matrix_png(confusion: Sequence[Sequence[int]], classnames: Sequence[str], path: Path, *,
                         title: str) -> Path:
    """Row-normalised confusion matrix (each row: where that class's images went)."""
    counts = np.asarray(confusion, dtype=np.float64)  # (C, C)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    num = len(classnames)
    side = float(np.clip(0.45 * num + 2.5, 5, 16))
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if num <= MAX_TICK_LABELS:
        ax.set_xticks(range(num), labels=[_short(c) for c in classnames], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(num), labels=[_short(c) for c in classnames], fontsize=8)
    if num <= MAX_CELL_NUMBERS:
        for t, p in zip(*np.nonzero(counts)):
            colour = "white" if share[t, p] > 0.5 else "black"
            ax.text(p, t, f"{int(counts[t, p])}", ha="center", va="center", fontsize=7, color=colour)
    suffix = "" if num <= MAX_TICK_LABELS else " (index into report.json classes)"
    ax.set_xlabel(f"predicted class{suffix}")
    ax.set_ylabel(f"true class{suffix}")
    ax.set_title(title)
    return save_png(fig, path)


def per_class_recall_png(report: dict[str, Any], path: Path, *, title: str) -> Path:
    """Horizontal bars of recall per class (best at the top), with chance and mean lines."""
    items = [(name, m["recall"], m["support"]) for name, m in report["per_class"].items() if m["support"] > 0]
    items.sort(key=lambda item: item[1])
    num = len(items)
    fig = Figure(figsize=(8, float(np.clip(0.28 * num + 1.5, 3, 30))))
    ax = fig.add_subplot()
    ax.barh(range(num), [r for _, r, _ in items], color="#3b75af")
    for row, (_, recall, _) in enumerate(items):
        ax.text(min(recall, 0.9) + 0.01, row, f"{recall:.0%}", va="center", fontsize=7)
    ax.set_yticks(range(num), labels=[f"{_short(n)} (n={s})" for n, _, s in items], fontsize=8)
    chance = 1.0 / max(1, report["num_classes"])
    ax.axvline(chance, color="grey", linestyle=":", label=f"chance {chance:.1%}")
    ax.axvline(report["mean_per_class_recall"], color="#d62728", linestyle="--",
               label=f"mean per-class recall {report['mean_per_class_recall']:.1%}")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, num - 0.4)
    ax.set_xlabel("recall (share of the class's images classified correctly)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return save_png(fig, path)


def project_2d(points: np.ndarray, method: Literal["pca", "tsne"], seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2). PCA keeps distances linear, so the modality gap shows as a real offset."""
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(points)


def embedding_map_png(image_features: torch.Tensor, image_labels: Sequence[int], text_features: torch.Tensor,
                      text_labels: Sequence[int], classnames: Sequence[str], path: Path, *, title: str,
                      method: Literal["pca", "tsne"] = "pca", max_images: int = 2000, seed: int = 0) -> Path:
    """Images (dots) and texts (stars) in one 2-D projection, coloured by class.

    Both modalities are projected together, so a modality gap (images and texts
    in separate regions) is visible as two clouds.
    """
    rng = np.random.default_rng(seed)
    img = image_features.float().cpu().numpy()
    img_labels = np.asarray(image_labels)
    if len(img) > max_images:  # keep the picture readable and the projection fast
        pick = np.sort(rng.choice(len(img), size=max_images, replace=False))
        img, img_labels = img[pick], img_labels[pick]
    txt = text_features.float().cpu().numpy()
    xy = project_2d(np.concatenate([img, txt]), method, seed)
    img_xy, txt_xy = xy[: len(img)], xy[len(img) :]
    num = len(classnames)
    cmap = _class_colours(num)
    fig = Figure(figsize=(9, 7))
    ax = fig.add_subplot()
    ax.scatter(img_xy[:, 0], img_xy[:, 1], c=cmap[img_labels], s=10, alpha=0.55, marker="o", linewidths=0)
    ax.scatter(txt_xy[:, 0], txt_xy[:, 1], c=cmap[np.asarray(text_labels)], s=180, marker="*",
               edgecolors="black", linewidths=0.8)  # fmt: skip
    handles = [
        Line2D([], [], marker="o", linestyle="", color="grey", label="image"),
        Line2D([], [], marker="*", linestyle="", color="grey", markeredgecolor="black", markersize=12,
               label="text (class prompt)"),
    ]
    if num <= MAX_LEGEND_CLASSES:
        handles += [
            Line2D([], [], marker="s", linestyle="", color=cmap[i], label=_short(c)) for i, c in enumerate(classnames)
        ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    axis = "PC" if method == "pca" else "t-SNE "
    ax.set_xlabel(f"{axis}1")
    ax.set_ylabel(f"{axis}2")
    ax.set_title(title)
    return save_png(fig, path)


def _class_colours(num: int) -> np.ndarray:
    """(num, 4) RGBA: tab10/tab20 while they suffice, then a hue wheel."""
    from matplotlib import colormaps

    if num <= 10:
        return np.asarray(colormaps["tab10"].colors)[:num] if num else np.zeros((0, 3))
    if num <= 20:
        return np.asarray(colormaps["tab20"].colors)[:num]
    return colormaps["hsv"](np.linspace(0, 1, num, endpoint=False))


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def recall_at_k_png(report: dict[str, Any], ks: Sequence[int], path: Path, *, title: str) -> Path:
    """Grouped bars: recall@k of image->text and text->image retrieval for each k."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    width = 0.38
    for offset, (direction, colour) in enumerate((("image_to_text", "#3b75af"), ("text_to_image", "#e1812c"))):
        values = [float(report[f"{direction}_R@{k}"]) for k in ks]
        xs = [i + (offset - 0.5) * width for i in range(len(ks))]
        ax.bar(xs, values, width, color=colour, label=direction.replace("_to_", " -> "))
        for x, value in zip(xs, values):
            ax.text(x, value + 0.01, f"{value:.0%}", ha="center", fontsize=8)
    ax.set_xticks(range(len(ks)), labels=[f"R@{k}" for k in ks])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("share of queries whose match is in the top k")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return save_png(fig, path)
