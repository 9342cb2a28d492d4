"""Quality at a fixed compute budget: our recipes against open_clip_train's, same val data and model size.

Every recipe trains for the same budget (minutes of this machine), then is
scored on the emoji val split, whose concepts never appear in training (split
by concept): image->text and text->image R@1/R@5 (first caption; captions
shared by several images count as CLIP_benchmark does) and category zero-shot
top-1, plus Fashion-MNIST test zero-shot (`--fmnist_test`: transfer to another
drawing style). Evaluation time is not part of the budget.

The budget is wall clock (`--budget_min`), or, with `--step_rates`, the steps
that budget buys on a quiet machine (rate x budget): a recipe's steps/s comes
from `--calibrate` (a short timed run of each recipe, machine otherwise idle),
so long runs can share the machine without changing what they learn.

open_clip_train gets its schedule sized to the budget (epochs so its cosine ends
with it) and is stopped at the budget; it uses our warm-up, weight decay, batch
and bf16 autocast (`amp_bf16`, its best CPU precision) and trains on the plain
emoji train split (`--train_data`). Recipe names take `@key=value` suffixes:
`@lr=5e-4` (either side) and any of our config overrides (`@loss.positives=group`).

Recipes (ours: pretrain config + overrides + which shards under --data_root):
  see RECIPES below; peers: open_clip_train_tiny, open_clip_train_lit.

Prints one JSON object (and writes it to `--out` after every run).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data_tools.atomic_write import write_json_atomic

from train_throughput import (  # the peer runner lives with the throughput benchmark (same folder)
    StepClock, patch_open_clip_train_webdataset, peer_argv, run_peer, shard_pattern)
from figures import print_figures  # benchmarks/figures.py
from machine import machine_info  # benchmarks/machine.py

PEER_RECIPES = {
    "open_clip_train_tiny": ("clip-tiny-64", []),
    "open_clip_train_lit": ("clip-tiny-64-minilm", ["--lock-text", "--lock-text-freeze-layer-norm"]),
}
LIT = "emoji-lit-minilm"
# name -> (named config, overrides, train shards under --data_root ("" = --train_data))
RN = "emoji-lit-rn"
BG = "data.background=random"  # needs shards built with --background keep (emoji-train-keep)
RAW = "model.name=clip-rn-64-minilm-raw"
PAIR = "loss.positives=pair"  # the ablation's baseline: one positive per pair (the configs now default to group)
RECIPES: dict[str, tuple[str, list[str], str]] = {
    # pretrain.named_configs.DEFAULT_CONFIG on the emoji train split built with `--captions rich --background keep`
    "ours_default": ("", [], "emoji-train-keep"),
    "ours_tiny": ("tiny", [], ""),
    "ours_lit": (LIT, [PAIR], ""),
    "ours_lit_group": (LIT, ["loss.positives=group"], ""),
    "ours_lit_rich": (LIT, [PAIR], "emoji-train-rich"),
    "ours_lit_4v": (LIT, [PAIR], "emoji-train-4v"),
    "ours_lit_aug": (LIT, [PAIR, "crop_scale_min=0.5", "color_jitter=0.3", "grayscale_prob=0.1"], ""),
    "ours_lit_unlock2": (LIT, [PAIR, "lock_text_unlocked_layers=2"], ""),
    "ours_lit_rn": ("emoji-lit-rn", [PAIR], ""),
    "ours_lit_siglip": (LIT, [PAIR, "loss.kind=siglip"], ""),
    "ours_lit_b512": (LIT, [PAIR, "accum_steps=4"], ""),
    "ours_lit_ema": (LIT, [PAIR, "ema_decay=0.995"], ""),
    "ours_default_aug": (RN, ["crop_scale_min=0.5", "color_jitter=0.3", "grayscale_prob=0.1"], "emoji-train-rich"),
    # from the previous default (emoji-lit-rn on white-flattened rich captions), one lever added per row
    "ours_rn": (RN, [], "emoji-train-rich"),
    "ours_rn_bg": (RN, [BG], "emoji-train-keep"),
    "ours_rn_bg_raw": (RN, [BG, RAW], "emoji-train-keep"),
    "ours_rn_bg_raw_soft": (RN, [BG, RAW, "loss.soft_targets=0.3"], "emoji-train-keep"),
}
CALIBRATION_STEPS, CALIBRATION_WARMUP = 40, 10


def evaluate(encoder: Any, val_data: str, label_field: str | None = None,
             fmnist_test: str | None = None, transfer: dict[str, str] | None = None) -> dict[str, float]:
    """Val image<->text R@1/R@5 (first caption), zero-shot top-1 (classes, or `label_field`),
    Fashion-MNIST test zero-shot when given, and R@1 both ways + zero-shot on each `transfer` set
    (name -> shard dir: other drawing styles, other backgrounds), keyed `transfer/NAME/...`."""
    from evaluate.zeroshot import ZeroShotEvaluator
    from evaluate.retrieval_recall import RetrievalEvaluator
    from evaluate.shard_encoding import EncodingConfig

    in_process = EncodingConfig(num_workers=0)

    def scored(data: str) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for evaluator in (RetrievalEvaluator(data=data, captions="first", encoding=in_process),
                          ZeroShotEvaluator(data=data, label_field=label_field, encoding=in_process)):
            metrics.update(dict(evaluator.run(encoder)))
        return metrics

    metrics = scored(val_data)
    keep = ("retrieval/image_to_text_R@1", "retrieval/text_to_image_R@1", "retrieval/image_to_text_R@5",
            "retrieval/text_to_image_R@5", "zeroshot/top1")
    scores = {k: metrics[k] for k in keep if k in metrics}
    if fmnist_test:
        fmnist = ZeroShotEvaluator(data=fmnist_test, encoding=in_process)
        scores["fmnist_zeroshot/top1"] = dict(fmnist.run(encoder))["zeroshot/top1"]
    for name, data in (transfer or {}).items():
        metrics = scored(data)
        scores.update({f"transfer/{name}/{k.split('/')[-1]}": metrics[k] for k in keep[:2] + keep[-1:]})
    return scores


def split_name(name: str) -> tuple[str, list[str]]:
    """'ours_lit@lr=5e-4@seed=1' -> ('ours_lit', ['lr=5e-4', 'seed=1'])."""
    base, *options = name.split("@")
    return base, options


def run_ours(name: str, bench: QualityConfig, work: Path, *, steps: int | None, seed: int,
             clock: StepClock | None = None) -> dict:
    from pretrain.config import apply_overrides
    from pretrain.named_configs import DEFAULT_CONFIG, named_config
    from pretrain.encoder import Encoder
    from pretrain.train import train

    base, suffix = split_name(name)
    config_name, options, shards = RECIPES[base]
    budget = ["steps=1000000", f"time_budget_min={bench.budget_min}"] if steps is None else \
        [f"steps={steps}", "time_budget_min=null"]
    config = apply_overrides(named_config(config_name or DEFAULT_CONFIG), [
        f"train_data={Path(bench.data_root) / shards if shards else bench.train_data}", *budget,
        f"out={work / f'{name}-seed{seed}'}", "progress=false", "checkpoint_every=1000000", "eval_every=0",
        f"seed={seed}", *options, *suffix])
    started = time.perf_counter()
    result = None  # stays None where the clock ends the run
    with clock or contextlib.nullcontext():
        result = train(config)
    return {"encoder": Encoder.load(result.run_dir) if result else None, "steps": result.step if result else 0,
            "seconds": time.perf_counter() - started, "config": config.name,
            "train_data": config.data.train_data, "options": [*options, *suffix]}


def run_peer_recipe(name: str, bench: QualityConfig, work: Path, *, steps: int | None, seed: int,
                    clock: StepClock | None = None) -> dict:
    from pretrain.encoder import Encoder

    base, suffix = split_name(name)
    options = dict(option.split("=", 1) for option in suffix)
    lr = float(options.get("lr", 1e-3))
    model, extra = PEER_RECIPES[base]
    extra = [*extra, "--seed", str(seed)]
    _, num_samples = shard_pattern(Path(bench.train_data))
    loaders = max(bench.workers, 1)  # open_clip_train rounds an epoch up to whole batches per worker; 0 = one loader
    steps_per_epoch = math.ceil(math.ceil(num_samples / bench.batch_size) / loaders) * loaders
    argv = dict(model=model, train_data=Path(bench.train_data), batch_size=bench.batch_size, workers=bench.workers,
                lr=lr, logs=work, extra=extra)
    if clock is not None:  # calibration
        run_peer(peer_argv(**argv, epochs=100, name=f"{name}-calibration"), clock)
        return {}
    if steps is None:
        calibration = StepClock(stop_after=CALIBRATION_STEPS)
        run_peer(peer_argv(**argv, epochs=100, name=f"{name}-calibration-{seed}"), calibration)
        steps = round(bench.budget_min * 60 * calibration.steps_per_s(warmup=CALIBRATION_WARMUP))
        stop = StepClock(stop_after_s=bench.budget_min * 60)
    else:
        stop = StepClock(stop_after=steps)
    epochs = max(1, round(steps / steps_per_epoch))
    started = time.perf_counter()
    built = run_peer(peer_argv(**argv, epochs=epochs, name=f"{name}-{seed}"), stop)
    encoder = Encoder.from_model(built["model"], model_name=model)
    return {"encoder": encoder, "steps": len(stop.times), "seconds": time.perf_counter() - started,
            "epochs_scheduled": epochs, "lr": lr}


def summarise(runs: list[dict]) -> dict[str, Any]:
    """Mean and spread (max - min) of every metric over a recipe's seeds."""
    metrics = [k for k in runs[0] if k.startswith(("retrieval/", "zeroshot/", "fmnist_", "transfer/")) or k == "steps"]
    columns = {key: [run[key] for run in runs] for key in metrics}
    return {key: {"mean": statistics.fmean(values), "spread": max(values) - min(values), "values": values}
            for key, values in columns.items()}


@dataclass(kw_only=True)
class QualityConfig:
    """Recipes trained for one budget and scored on unseen concepts (see the module docstring)."""

    train_data: str
    """Plain emoji train shards (open_clip_train's data, and recipes with no shards of their own)."""
    val_data: str
    """Emoji val shards (concepts never trained on)."""
    data_root: str = "runs/demo/data"
    """Where the recipes' own train shards are (RECIPES' third column)."""
    fmnist_test: str | None = None
    """Fashion-MNIST test shards: zero-shot in another image style."""
    transfer: dict[str, str] = field(default_factory=dict)
    """Other val sets scored like val_data, name -> shard dir (e.g. the val concepts drawn by other vendors,
    or flattened onto black): `'{"af": "runs/demo/data/emoji-val-af"}'`."""
    budget_min: float = 10.0
    """Training budget per run, minutes of this machine."""
    step_rates: dict[str, float] | None = None
    """recipe -> quiet-machine steps/s (from --calibrate): train rate x budget steps instead of timing."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds per recipe."""
    batch_size: int = 128
    """open_clip_train's batch (ours come from their configs)."""
    workers: int = 0
    """open_clip_train's loader workers."""
    recipes: list[str] = field(default_factory=lambda: ["ours_default", "open_clip_train_lit"])
    """Recipes to run, in order (`name@key=value` adds an override)."""
    calibrate: bool = False
    """Only time CALIBRATION_STEPS steps of each recipe and report its steps/s."""
    score_runs: dict[str, str] = field(default_factory=dict)
    """Instead of training: score finished runs, recipe name -> run dir (trained elsewhere, e.g. one
    pinned `clipline pretrain` per core with the recipe's options and a fixed step count)."""
    out: str | None = None
    """Write the JSON here too (after every recipe)."""


def measure(bench: QualityConfig) -> dict[str, Any]:
    """Train each recipe for `budget_min` minutes per seed and score it on the unseen-concept val split;
    with `calibrate`, only time CALIBRATION_STEPS steps of each and report its steps/s."""
    patch_open_clip_train_webdataset()
    threads = torch.get_num_threads()
    work = Path(tempfile.mkdtemp(prefix="quality-"))
    recipes = bench.recipes or ["ours_default", "open_clip_train_lit"]
    unknown = [n for n in recipes if split_name(n)[0] not in RECIPES and split_name(n)[0] not in PEER_RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}: choose from {', '.join([*RECIPES, *PEER_RECIPES])}")
    report: dict[str, Any] = {"budget_min": bench.budget_min, "step_rates": bench.step_rates,
                              "batch_size": bench.batch_size, "workers": bench.workers, "train_data": bench.train_data,
                              "val_data": bench.val_data, "fmnist_test": bench.fmnist_test, "transfer": bench.transfer,
                              "seeds": list(bench.seeds), "recipes": {}, "environment": machine_info(threads=threads)}
    score = functools.partial(evaluate, val_data=bench.val_data, fmnist_test=bench.fmnist_test, transfer=bench.transfer)
    for name, run_dir in bench.score_runs.items():
        from pretrain.encoder import Encoder

        summary = json.loads((Path(run_dir) / "summary.json").read_text())
        run = {"steps": summary["step"], "run_dir": run_dir, "seed": json.loads(
            (Path(run_dir) / "config.json").read_text())["seed"]}
        runs = [{**run, **score(Encoder.load(run_dir))}]
        print(f"{name}: {json.dumps(runs[-1])}", file=sys.stderr)
        report["recipes"][name] = {"runs": runs, "summary": summarise(runs)}
    for name in recipes if not bench.score_runs else ():
        run_recipe = run_ours if split_name(name)[0] in RECIPES else run_peer_recipe
        train_recipe = functools.partial(run_recipe, name, bench, work)
        if bench.calibrate:
            clock = StepClock(stop_after=CALIBRATION_STEPS)
            train_recipe(steps=None, seed=0, clock=clock)
            torch.set_num_threads(threads)
            report["recipes"][name] = {"steps_per_s": clock.steps_per_s(warmup=CALIBRATION_WARMUP)}
            print(f"{name}: {json.dumps(report['recipes'][name])}", file=sys.stderr)
            continue
        rates = bench.step_rates or {}
        steps = round(rates[name] * bench.budget_min * 60) if name in rates else None
        runs = []
        for seed in bench.seeds:
            run = train_recipe(steps=steps, seed=seed)
            torch.set_num_threads(threads)
            encoder = run.pop("encoder")
            runs.append({**run, "seed": seed, **score(encoder)})
            print(f"{name} seed {seed}: {json.dumps(runs[-1])}", file=sys.stderr)
        report["recipes"][name] = {"runs": runs, "summary": summarise(runs)}
        if bench.out:
            write_json_atomic(bench.out, report)
    if bench.out:
        write_json_atomic(bench.out, report)
    return report


if __name__ == "__main__":
    from clipline.flags import parse_script_config

    print_figures(measure(parse_script_config(QualityConfig, sys.argv[1:], prog="benchmarks/train_quality.py")))
