"""Reports in CLIP_benchmark's JSON layout (`clipline zeroshot|eval retrieval --format clip_benchmark`).

    {"dataset": ..., "model": ..., "pretrained": ..., "task": "zeroshot_classification" | "zeroshot_retrieval",
     "metrics": {...}, "language": "en"}

Classification metrics: `acc1`, `acc5` (null with fewer than 5 classes, where
CLIP_benchmark writes NaN), `mean_per_class_recall` (balanced accuracy, as
ours). Retrieval: `image_retrieval_recall@k` (text->image) and
`text_retrieval_recall@k` (image->text), counted per caption as CLIP_benchmark
counts them (`evaluate.retrieval_recall.clip_benchmark_recalls`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluate.errors import EvaluateError


def dataset_name(data: str | Path, info: dict[str, Any]) -> str:
    """The name a results table files the data under: dataset.json `source` (and split), else the directory name."""
    source = info.get("source")
    if isinstance(source, str) and source:
        split = (info.get("build") or {}).get("split")
        return f"{source}_{split}" if isinstance(split, str) and split else source
    return Path(str(data).rstrip("/")).name


def zeroshot_classification(report: dict[str, Any], *, dataset: str, model: str | None,
                            pretrained: str | None) -> dict[str, Any]:
    metrics = {"acc1": report["top1"], "acc5": report["top5"] if report["num_classes"] >= 5 else None,
               "mean_per_class_recall": report["mean_per_class_recall"]}
    return _layout("zeroshot_classification", metrics, dataset=dataset, model=model, pretrained=pretrained)


def zeroshot_retrieval(report: dict[str, Any], *, dataset: str, model: str | None,
                       pretrained: str | None) -> dict[str, Any]:
    if "clip_benchmark" not in report:
        raise EvaluateError("this retrieval report has no CLIP_benchmark counts; evaluate with clip_benchmark=True")
    return _layout("zeroshot_retrieval", dict(report["clip_benchmark"]), dataset=dataset, model=model,
                   pretrained=pretrained)


def _layout(task: str, metrics: dict[str, Any], *, dataset: str, model: str | None,
            pretrained: str | None) -> dict[str, Any]:
    return {"dataset": dataset, "model": model, "pretrained": pretrained, "task": task, "metrics": metrics,
            "language": "en"}
