"""What a run leaves to watch it: metrics.jsonl, tensorboard events, a curves PNG.

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
        if truncate_after_step is not None:
            self._truncate(truncate_after_step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR),
                                     purge_step=truncate_after_step + 1 if truncate_after_step else None)
        except ImportError:  # tensorboard is optional for watching; the JSONL is the record
            LOG.warning("tensorboard not installed: metrics go to %s only", self.path)

    def _truncate(self, step: int) -> None:
        """A resumed run drops rows logged after its checkpoint (they will be logged again)."""
        if not self.path.is_file():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [row for row in rows if json.loads(row).get("step", 0) <= step]
        write_text_atomic(self.path, "".join(row + "\n" for row in kept))

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


def plot_curves(metrics_path: Path, out_png: Path) -> Path | None:
    """Loss, learning rate and logit scale against step, one panel each."""
    rows = [r for r in read_metrics(metrics_path) if "loss" in r] if metrics_path.is_file() else []
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("loss", "lr", "logit_scale"),
                              ("training loss", "learning rate", "logit scale (1/temperature)")):
        ax.plot(steps, [r[key] for r in rows])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out_png
