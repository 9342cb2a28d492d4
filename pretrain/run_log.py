"""What a run leaves to watch it: metrics.jsonl, tensorboard events, curves.png (loss beside val metrics).

Only the main process writes (others get a no-op log). Rows in metrics.jsonl
are one JSON object per line: training rows have `step, loss, lr,
logit_scale, samples_per_s, epoch` (and `distill_kl, distill_feature` when
distilling, see teacher.py); evaluation rows have `step` and the
evaluators' metric names.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from data_tools.atomic_write import atomic_path, write_text_atomic
from data_tools.output_paths import check_output_dir

LOG = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"


class RunLog:
    """Append metrics rows to metrics.jsonl and tensorboard."""

    def __init__(self, run_dir: Path, *, enabled: bool, truncate_after_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self._tb = None
        if not enabled:
            return
        check_output_dir(run_dir)
        if truncate_after_step is not None and self.path.is_file():
            # a resumed run drops rows logged after its checkpoint (they will be logged again)
            kept = [row for row in read_metrics(self.path) if row.get("step", 0) <= truncate_after_step]
            write_text_atomic(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR),
                                     purge_step=truncate_after_step + 1 if truncate_after_step else None)
        except ImportError:  # tensorboard is optional for watching; the JSONL is the record
            LOG.warning("tensorboard not installed: metrics go to %s only", self.path)

    def write(self, row: dict[str, Any], *, prefix: str = "train") -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    tag = key if "/" in key else f"{prefix}/{key}"
                    self._tb.add_scalar(tag, value, row["step"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# In-loop val metrics drawn beside the loss (names as evaluate.in_loop's evaluators yield them).
VAL_CURVES = {
    "retrieval/image_to_text_R@1": "val R@1 image->text",
    "retrieval/text_to_image_R@1": "val R@1 text->image",
    "zeroshot/top1": "val zero-shot top-1",
}
ZERO_SHOT = "zeroshot/top1"


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, bias-corrected at the start (as TensorBoard's smoothing slider)."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def plot_curves(metrics_path: Path, out_png: Path) -> Path | None:
    """Training loss (raw and smoothed) beside the in-loop val metrics, then learning rate and logit scale.

    The val panel marks the step where val zero-shot peaked, so a model that goes
    on lowering its training loss while val falls (memorising) shows at a glance.
    """
    from matplotlib.figure import Figure  # deferred: matplotlib takes a second to import

    rows = read_metrics(metrics_path) if metrics_path.is_file() else []
    train = [r for r in rows if "loss" in r]
    if not train:
        return None
    steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
    fig = Figure(figsize=(13, 7.5))
    (loss_ax, val_ax), (lr_ax, scale_ax) = fig.subplots(2, 2)
    loss_ax.plot(steps, losses, color="#3b75af", alpha=0.25, linewidth=0.8, label="loss")
    loss_ax.plot(steps, smooth(losses), color="#3b75af", linewidth=1.8, label="smoothed (EMA 0.9)")
    loss_ax.set_title("training loss")
    loss_ax.legend(fontsize=8)
    _plot_val(val_ax, rows)
    val_ax.set_xlim(loss_ax.get_xlim())  # the same steps under both panels
    for ax, key, title in ((lr_ax, "lr", "learning rate"), (scale_ax, "logit_scale", "logit scale (1/temperature)")):
        ax.plot(steps, [r.get(key) for r in train])
        ax.set_title(title)
    for ax in (loss_ax, val_ax, lr_ax, scale_ax):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    return out_png


def _plot_val(ax: Any, rows: list[dict[str, Any]]) -> None:
    """The val metrics against step; a note when the run had no --val-data."""
    evals = [r for r in rows if any(key in r for key in VAL_CURVES)]
    ax.set_title("in-loop validation")
    if not evals:
        ax.text(0.5, 0.5, "no val metrics (train with --val-data DIR)", ha="center", va="center",
                transform=ax.transAxes, color="#666")
        return
    for key, label in VAL_CURVES.items():
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    peaks = [(r[ZERO_SHOT], r["step"]) for r in evals if ZERO_SHOT in r]
    if peaks:
        best, step = max(peaks)
        ax.axvline(step, color="grey", linestyle=":", label=f"best zero-shot {best:.1%} at step {step}")
    ax.set_ylim(0, None)
    ax.legend(fontsize=8)
