"""curves.png: a smoothed training loss beside the in-loop val metrics, the val zero-shot peak marked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from PIL import Image

from pretrain.run_log import _plot_val, plot_curves, read_metrics, smooth


def write_run(path: Path) -> Path:
    """A run that memorises: the loss keeps falling, val zero-shot peaks at step 200 and then drops."""
    rows = [{"step": s, "loss": 4.0 - s / 200 + (0.3 if s % 2 else -0.3), "lr": 1e-3, "logit_scale": 14.0}
            for s in range(1, 601)]
    for step, zero_shot in ((100, 0.30), (200, 0.40), (300, 0.35), (600, 0.25)):
        rows.append({"step": step, "retrieval/image_to_text_R@1": zero_shot / 2,
                     "retrieval/text_to_image_R@1": zero_shot / 3, "zeroshot/top1": zero_shot})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_smoothing_is_a_bias_corrected_moving_average() -> None:
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    assert smooth([0.0, 10.0], weight=0.5) == pytest.approx([0.0, 5 / 0.75])
    noisy = [1.0 + (0.5 if i % 2 else -0.5) for i in range(200)]
    assert max(smooth(noisy)[50:]) - min(smooth(noisy)[50:]) < 0.2 < max(noisy) - min(noisy)


def test_val_panel_draws_both_recalls_and_zero_shot_with_its_peak(tmp_path: Path) -> None:
    rows = read_metrics(write_run(tmp_path / "metrics.jsonl"))
    ax = Figure().subplots()
    _plot_val(ax, rows)
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["val R@1 image->text", "val R@1 text->image", "val zero-shot top-1",
                      "best zero-shot 40.0% at step 200"]
    zero_shot = ax.get_lines()[2]
    assert list(zero_shot.get_xdata()) == [100, 200, 300, 600]


def test_curves_png_has_the_four_panels_and_says_when_there_is_no_val(tmp_path: Path) -> None:
    out = plot_curves(write_run(tmp_path / "metrics.jsonl"), tmp_path / "curves.png")
    with Image.open(out) as image:
        assert image.width >= 1200 and image.height >= 700
    train_only = tmp_path / "train_only.jsonl"
    train_only.write_text(json.dumps({"step": 1, "loss": 3.0, "lr": 1e-3, "logit_scale": 14.0}) + "\n")
    ax = Figure().subplots()
    _plot_val(ax, read_metrics(train_only))
    assert "--val-data" in ax.texts[0].get_text()
    assert plot_curves(tmp_path / "missing.jsonl", tmp_path / "none.png") is None
