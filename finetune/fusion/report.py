"""The fusion report: per-task classification reports (the evaluation suite's format) under
full input and with either modality missing at test time, plus plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluate.metrics import classification_report
from evaluate.plots import confusion_matrix_png, per_class_recall_png
from finetune.fusion.config import FusionConfig
from finetune.fusion.model import FusionClassifier
from finetune.fusion.multitask import TaskLossWeighting
from finetune.fusion.train import CONDITIONS, BatchSource, predict

SUMMARY_KEYS = ("top1", "top5", "macro_f1", "mean_per_class_recall", "n")


def evaluate_conditions(model: FusionClassifier, test: BatchSource) -> dict[str, dict[str, Any]]:
    """`reports` {condition: {task: classification_report}} for both modalities, image only and
    text only; `gate_mean` {condition: mean gate} for the gated head (1 = all image, 0 = all text)."""
    reports: dict[str, dict[str, Any]] = {}
    gates: dict[str, float] = {}
    for condition in CONDITIONS:
        predicted = predict(model, test(), condition)
        reports[condition] = {
            task: classification_report(predicted["targets"][:, i], scores=predicted["logits"][task],
                                        classnames=model.classes[task])
            for i, task in enumerate(model.classes)
        }
        if "gate" in predicted:
            gates[condition] = float(predicted["gate"].mean())
    return {"reports": reports, "gate_mean": gates}


def build_report(results: dict[str, dict[str, Any]], weighting: TaskLossWeighting, *, config: FusionConfig,
                 history: list[dict], data: dict, checkpoint: str, checkpoint_id: str) -> dict[str, Any]:
    """report.json from `evaluate_conditions` results: `tasks` {task: report (both modalities)},
    `missing_modality` {task: {image_only, text_only}}, `summary` {condition: {task: top1/macro_f1/...}},
    gate values, task weights, data counts."""
    reports = results["reports"]
    tasks = list(reports["both"])
    best = next((row["epoch"] for row in reversed(history) if row.get("best")), history[-1]["epoch"])
    report: dict[str, Any] = {
        "method": "fusion",
        "fusion": config.fusion,
        "towers": config.towers,
        "checkpoint": checkpoint,
        "checkpoint_id": checkpoint_id,
        "tasks": {task: reports["both"][task] for task in tasks},
        "missing_modality": {task: {c: reports[c][task] for c in ("image_only", "text_only")} for task in tasks},
        "summary": {c: {task: {k: reports[c][task][k] for k in SUMMARY_KEYS} for task in tasks} for c in reports},
        "task_weights": weighting.effective_weights(),
        "best_epoch": best,
        "n": reports["both"][tasks[0]]["n"],
        **data,
    }
    if results["gate_mean"]:
        report["gate_mean_image_share"] = results["gate_mean"]  # 1 = all image, 0 = all text
    return report


def write_plots(report: dict[str, Any], out: Path) -> None:
    """Confusion matrix and per-class recall PNG per task (both modalities present)."""
    for task, result in report["tasks"].items():
        title = f"fusion {report['fusion']}: {task}"
        confusion_matrix_png(result["confusion"], result["classes"], out / f"confusion_{task}.png", title=title)
        per_class_recall_png(result, out / f"per_class_recall_{task}.png", title=title)
