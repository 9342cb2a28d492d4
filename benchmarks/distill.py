"""Distillation: a clip-tiny-64 student trained with and without a teacher for the same wall-clock budget.

    python benchmarks/distill.py --teacher RUN --train-data DIR --val-data DIR [--budget-min 10]

Both students use the `tiny` named config (clip-tiny-64 from scratch) with the
same seed, batch and budget, back to back in this one process; the distilled
one adds `distill.teacher=RUN` (similarity-matrix KL + feature cosine, see
pretrain/teacher.py), so it pays the teacher's forward passes out of its
budget. Then teacher, distilled student and plain student are each scored:
parameters (total, image tower, rest), encode speed on one fixed batch of val
images / captions (preprocessed for the teacher, converted for a student
whose preprocessing differs; fp32, no grad, best of `repeats` passes), category
zero-shot top-1 (evaluate.zeroshot.ZeroShotEvaluator) and image<->text R@1
on the first caption (evaluate.retrieval_recall.RetrievalEvaluator), all on the val
shards. Prints one JSON object (with CPU flags and versions). Never asserts on
time.
"""

from __future__ import annotations

import json
import sys
import tempfile
import timeit
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from train_quality import evaluate  # benchmarks/train_quality.py (this script's folder is on sys.path)
from figures import print_figures, timed  # benchmarks/figures.py
from machine import machine_info  # benchmarks/machine.py

from pretrain.config import DistillConfig


def train_student(bench: BenchConfig, out: Path, distill: DistillConfig | None) -> dict[str, Any]:
    """A `tiny` student trained for the budget into `out`, with a teacher where `distill` is given."""
    from pretrain.config import apply_overrides
    from pretrain.named_configs import named_config
    from pretrain.run_log import read_metrics
    from pretrain.train import train

    config = apply_overrides(named_config("tiny"), [
        f"train_data={bench.train_data}", f"out={out}", f"time_budget_min={bench.budget_min}",
        f"batch_size={bench.batch_size}", f"workers={'null' if bench.workers is None else bench.workers}",
        "eval_every=0", "checkpoint_every=1000000", "log_every=5", "progress=false"])
    config = replace(config, distill=distill) if distill else config
    result, seconds = timed(train, config)
    metrics = out / "metrics.jsonl"
    rows = [r for r in read_metrics(metrics) if "loss" in r] if metrics.is_file() else []
    last = {k: v for k, v in rows[-1].items() if k in ("step", "loss", "distill_kl", "distill_feature")} if rows else {}
    return {"steps": result.step, "seconds": round(seconds, 1), "final_loss": result.loss,
            "train_samples_per_s": round(result.step * bench.batch_size / seconds, 1), "last_log": last,
            "options": asdict(distill) if distill else {}}


def val_batch(encoder: Any, val_data: str, size: int) -> tuple[torch.Tensor, list[str]]:
    """The first `size` val images (eval transform) and their first captions."""
    from data_tools.loader import LoaderConfig, make_loader

    loader = make_loader(val_data, LoaderConfig(batch_size=size, num_workers=0, caption="first"),
                         image_transform=encoder.preprocess)
    batch = next(iter(loader))
    return batch["image"], list(batch["caption"])


def best_rate(work: Any, count: int, repeats: int) -> float:
    """Items per second of `work()`, best of `repeats` timed passes after one warm-up."""
    work()
    return count / min(timeit.repeat(work, number=1, repeat=repeats))


def profile(encoder: Any, images: torch.Tensor, captions: list[str], *, val_data: str, repeats: int) -> dict:
    params = sum(p.numel() for p in encoder.model.parameters())
    image_params = sum(p.numel() for p in encoder.model.visual.parameters())
    metrics = evaluate(encoder, val_data, label_field="category")
    return {
        "model": encoder.config["model_name"], "embed_dim": encoder.embed_dim,
        "params": params, "image_tower_params": image_params, "other_params": params - image_params,
        "encode_images_per_s": round(best_rate(lambda: encoder.encode_image(images), len(images), repeats), 1),
        "encode_captions_per_s": round(best_rate(lambda: encoder.encode_text(captions), len(captions), repeats), 1),
        "zeroshot_category_top1": metrics["zeroshot/top1"],
        "image_to_text_R@1": metrics["retrieval/image_to_text_R@1"],
        "text_to_image_R@1": metrics["retrieval/text_to_image_R@1"],
    }


@dataclass(kw_only=True)
class BenchConfig:
    """Train plain and distilled students for `budget_min` minutes each, then profile all three models."""

    distill: DistillConfig = field(default_factory=DistillConfig)
    """The distilled student's teacher (required) and loss weights (flags without prefix: --teacher RUN ...)."""
    train_data: str
    """Training shard directory."""
    val_data: str
    """Val shard directory (captions and category labels)."""
    budget_min: float = 10.0
    """Wall-clock minutes of training per student."""
    batch_size: int = 128
    """Pairs per step for both students."""
    workers: int | None = None
    """Loader worker processes (None: the trainer's choice)."""
    encode_batch: int = 256
    """Val images/captions in the encode-speed batch."""
    repeats: int = 5
    """Timed encode passes (the best counts)."""
    work: str | None = None
    """Directory for the two student runs (default: a new temporary dir)."""


def measure(config: BenchConfig) -> dict[str, Any]:
    """Train plain and distilled students for the budget each, then profile all three models."""
    from pretrain.checkpoint import resolve_checkpoint
    from pretrain.encoder import Encoder
    from pretrain.teacher import image_adapter

    threads = torch.get_num_threads()
    root = Path(config.work) if config.work else Path(tempfile.mkdtemp(prefix="distill-"))
    teacher_ckpt = resolve_checkpoint(config.distill.teacher)
    runs = {
        "plain_student": train_student(config, root / "plain", None),
        "distilled_student": train_student(config, root / "distilled", config.distill),
    }
    torch.set_num_threads(threads)  # the trainer may have changed it
    encoders = {"teacher": Encoder.load(teacher_ckpt), "distilled_student": Encoder.load(root / "distilled"),
                "plain_student": Encoder.load(root / "plain")}
    images, captions = val_batch(encoders["teacher"], config.val_data, config.encode_batch)
    models: dict[str, Any] = {}
    for name, encoder in encoders.items():
        adapt = image_adapter(encoders["teacher"].config["preprocess"], encoder.config["preprocess"])
        models[name] = {**profile(encoder, adapt(images), captions, val_data=config.val_data,
                                  repeats=config.repeats), **runs.get(name, {"checkpoint": str(teacher_ckpt)})}
        print(f"{name}: {json.dumps(models[name])}", file=sys.stderr)
    return {"budget_min": config.budget_min, "batch_size": config.batch_size, "train_data": config.train_data,
            "val_data": config.val_data,
            "encode": {"batch": len(images), "precision": "fp32", "timing": f"best of {config.repeats}"},
            "models": models, "work": str(root), "environment": machine_info(threads=threads)}


if __name__ == "__main__":
    from clipline.flags import parse_script_config

    bench = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/distill.py", flat=("distill",))
    if not bench.distill.teacher:
        sys.exit("benchmarks/distill.py: pass --teacher RUN")
    print_figures(measure(bench))
