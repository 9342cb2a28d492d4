"""Quality at a fixed wall-clock budget: our recipes against open_clip_train's, same data and model size.

Every recipe trains on the emoji train split for the same budget (minutes of
wall clock on this machine), then is scored on the val split, whose concepts
never appear in training (split by concept): image->text and text->image
R@1 (evaluate.retrieval_recall.RetrievalEvaluator, first caption) and category
zero-shot top-1 (evaluate.zeroshot.ZeroShotEvaluator). Evaluation time is not
part of the budget.

open_clip_train gets its schedule sized to the budget: a short calibration
run measures its steps/s, its epochs are set so its cosine ends when the
budget does, and the run is stopped at the budget in any case. It uses the
same learning rate, warm-up, weight decay, batch and bf16 autocast as ours.

Recipes:
  ours_default          the default config (pretrain.config.DEFAULT_CONFIG)
  ours_tiny             clip-tiny-64 from scratch
  ours_lit_locked       emoji-lit-minilm: tiny ViT, MiniLM text tower locked
  ours_lit_tuned        emoji-lit-minilm with the last 2 MiniLM layers trained too
  ours_lit_locked_pd50  emoji-lit-minilm with FLIP patch dropout 0.5
  open_clip_train_tiny  clip-tiny-64 from scratch
  open_clip_train_lit   clip-tiny-64-minilm with the text tower locked (--lock-text, LayerNorm frozen too)

Prints one JSON object.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import (  # noqa: E402  (the peer runner lives with the throughput benchmark)
    StepClock, environment, patch_open_clip_train_webdataset, peer_argv, run_peer, shard_pattern)

PEER_RECIPES = {
    "open_clip_train_tiny": ("clip-tiny-64", []),
    "open_clip_train_lit": ("clip-tiny-64-minilm", ["--lock-text", "--lock-text-freeze-layer-norm"]),
}
CALIBRATION_STEPS = 12


def evaluate(encoder: Any, val_data: str, label_field: str | None = None) -> dict[str, float]:
    """Val image<->text R@1/R@5 (first caption) and zero-shot top-1 (classes, or `label_field`)."""
    from evaluate.zeroshot import ZeroShotEvaluator
    from evaluate.retrieval_recall import RetrievalEvaluator

    metrics: dict[str, float] = {}
    for evaluator in (RetrievalEvaluator(data=val_data, captions="first", num_workers=0),
                      ZeroShotEvaluator(data=val_data, label_field=label_field, num_workers=0)):
        metrics.update(dict(evaluator.run(encoder)))
    keep = ("retrieval/image_to_text_R@1", "retrieval/text_to_image_R@1", "retrieval/image_to_text_R@5",
            "retrieval/text_to_image_R@5", "zeroshot/top1")
    return {k: metrics[k] for k in keep if k in metrics}


def run_ours(config_name: str, *, train_data: str, budget_min: float, work: Path, options: list[str]) -> dict:
    from pretrain.config import apply_overrides, named_config
    from pretrain.encoder import Encoder
    from pretrain.train import train

    config = apply_overrides(named_config(config_name), [
        f"train_data={train_data}", f"time_budget_min={budget_min}", "steps=1000000", f"out={work / config_name}",
        "progress=false", "checkpoint_every=1000000", "eval_every=0", *options])
    started = time.perf_counter()
    result = train(config)
    return {"encoder": Encoder.load(result.run_dir), "steps": result.step, "seconds": time.perf_counter() - started,
            "config": config_name, "options": options}


def run_peer_recipe(name: str, *, train_data: str, budget_min: float, batch_size: int, workers: int,
                    work: Path) -> dict:
    from pretrain.encoder import Encoder

    model, extra = PEER_RECIPES[name]
    _, num_samples = shard_pattern(Path(train_data))
    loaders = max(workers, 1)  # open_clip_train rounds an epoch up to whole batches per worker; 0 = one loader
    steps_per_epoch = math.ceil(math.ceil(num_samples / batch_size) / loaders) * loaders
    calibration = StepClock(stop_after=CALIBRATION_STEPS)
    run_peer(peer_argv(model=model, train_data=Path(train_data), batch_size=batch_size, workers=workers,
                       epochs=100, lr=1e-3, warmup=100, logs=work, name=f"{name}-calibration", extra=extra),
             calibration)
    rate = calibration.steps_per_s(warmup=4)
    epochs = max(1, round(budget_min * 60 * rate / steps_per_epoch))
    clock = StepClock(stop_after_s=budget_min * 60)
    started = time.perf_counter()
    built = run_peer(peer_argv(model=model, train_data=Path(train_data), batch_size=batch_size, workers=workers,
                               epochs=epochs, lr=1e-3, warmup=100, logs=work, name=name, extra=extra), clock)
    seconds = time.perf_counter() - started
    encoder = Encoder.from_model(built["model"], model_name=model)
    return {"encoder": encoder, "steps": len(clock.times), "seconds": seconds, "epochs_scheduled": epochs,
            "calibrated_steps_per_s": rate}


def measure(train_data: str, val_data: str, *, budget_min: float = 10.0, batch_size: int = 128,
            workers: int = 1, recipes: list[str] | None = None) -> dict[str, Any]:
    """Train each recipe for `budget_min` minutes and score it on the unseen-concept val split."""
    from pretrain.config import DEFAULT_CONFIG

    patch_open_clip_train_webdataset()
    threads = torch.get_num_threads()
    work = Path(tempfile.mkdtemp(prefix="quality-"))
    common = [f"batch_size={batch_size}", f"workers={workers}"]
    ours = {"ours_default": (DEFAULT_CONFIG, common), "ours_tiny": ("tiny", common),
            "ours_lit_locked": ("emoji-lit-minilm", common),
            "ours_lit_tuned": ("emoji-lit-minilm", [*common, "lock_text_unlocked_layers=2"]),
            "ours_lit_locked_pd50": ("emoji-lit-minilm", [*common, "patch_dropout=0.5"])}
    recipes = recipes or ["ours_default", "ours_tiny", *PEER_RECIPES]
    results: dict[str, Any] = {}
    unknown = [n for n in recipes if n not in ours and n not in PEER_RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}: choose from {', '.join([*ours, *PEER_RECIPES])}")
    for name in recipes:
        if name in ours:
            run = run_ours(ours[name][0], train_data=train_data, budget_min=budget_min, work=work,
                           options=ours[name][1])
        else:
            run = run_peer_recipe(name, train_data=train_data, budget_min=budget_min, batch_size=batch_size,
                                  workers=workers, work=work)
        torch.set_num_threads(threads)
        encoder = run.pop("encoder")
        results[name] = {**run, **evaluate(encoder, val_data)}
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr)
    return {"budget_min": budget_min, "batch_size": batch_size, "workers": workers, "train_data": train_data,
            "val_data": val_data, "recipes": results, "environment": environment(threads)}


if __name__ == "__main__":
    from jsonargparse import CLI

    print(json.dumps(CLI(measure, as_positional=False), indent=2))
