"""Few-shot adaptation figures for a checkpoint: prints one JSON object.

1. Fashion-MNIST test: zero-shot, then every method at 1/4/16 shots x 3 seeds
   (mean and std over seeds), full fine-tuning as the reference, and the fit
   time per method at the largest shot count.
2. Full data: the linear probe on all training features (`--full-data-train`, e.g.
   all 60k) vs logistic regression on the same images' raw 28x28 pixels (the floor
   the representation must clear).
3. Emoji categories with a 10:1 imbalanced train split (alternate categories
   keep 1/ratio of the majority count), with and without each imbalance option.

    flock /tmp/clipline-cpu.lock .venv/bin/python benchmarks/fewshot.py --checkpoint RUN \\
        --fm-train FM_TRAIN --fm-test FM_TEST --emoji-train EMOJI_TRAIN --emoji-eval EMOJI_VAL \\
        [--full-data-train ALL_FM_TRAIN]
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from clipline.flags import parse_script_config
from data_tools.sources.fashion_mnist import CLASSES, load_fashion_mnist
from finetune.methods.experiment import (Prepared, evaluate, make_task, prepare, report_for_logits, timed_fit,
                                        zeroshot_report)
from finetune.methods.imbalance import ImbalanceConfig
from finetune.methods.linear_probe import LinearProbeConfig, fit_linear_probe
from finetune.methods.shots import parse_shots
from finetune.methods.sweep import METRICS, run_grid, summarise
from finetune.methods.task import FewShotTask
from finetune.methods.wise_ft import WiseFtConfig
from pretrain.encoder import Encoder
from figures import print_figures, timed  # benchmarks/figures.py
from machine import machine_info  # benchmarks/machine.py (this script's folder is on sys.path)


@dataclass(kw_only=True)
class BenchConfig:
    """Few-shot benchmark settings."""

    checkpoint: str
    """Pretraining run or checkpoint directory."""
    fm_train: str
    """Fashion-MNIST train shards (`clipline data build fashion-mnist --split train`)."""
    fm_test: str
    """Fashion-MNIST test shards."""
    emoji_train: str | None = None
    """Emoji train shards for the imbalance study (skipped when absent)."""
    emoji_eval: str | None = None
    """Emoji shards evaluated on in the imbalance study."""
    methods: str = "linear-probe,clip-adapter,tip-adapter,tip-adapter-f,wise-ft"
    """Feature-level methods run at every shot count and seed."""
    shots: str = "1,4,16"
    """Shot counts per class."""
    seeds: str = "1,2,3"
    """Seeds (k-shot draws)."""
    full_finetune_shots: str = "16"
    """Shot counts for the full fine-tuning reference (slow: it re-encodes the test set). Empty: skip."""
    wise_ft_image_alphas: str = "0,0.2,0.4,0.6,0.8,1"
    """WiSE-FT over the whole image tower once (largest shot count, first seed) at these alphas;
    each alpha re-encodes the test set. Empty: skip."""
    full_data: bool = True
    """Also fit the linear probe on all training features and compare it with raw-pixel regression."""
    full_data_train: str | None = None
    """Fashion-MNIST train shards for that full-data comparison (e.g. all 60k); default: `fm_train`."""
    raw_pixels: str = "/usr/share/datasets/fashion-mnist"
    """Directory with the Fashion-MNIST IDX files for the raw-pixel baseline."""
    imbalance_ratio: int = 10
    """Majority : minority training samples per class in the emoji study."""
    majority_per_class: int = 100
    """Training samples of a majority category (minority: this / ratio)."""
    feature_cache: str | None = None
    """Feature cache directory (default ~/.cache/clipline/features)."""
    out: str | None = None
    """Also write the JSON here."""


def fashion_mnist(cfg: BenchConfig, encoder: Encoder) -> dict[str, Any]:
    prep = prepare(encoder, train_data=cfg.fm_train, eval_data=cfg.fm_test, feature_cache=cfg.feature_cache)
    shots, seeds = parse_shots(cfg.shots), [int(s) for s in cfg.seeds.split(",")]
    runs = run_grid(prep, cfg.methods.split(","), shots, seeds)
    if cfg.full_finetune_shots:
        runs += run_grid(prep, ["full-finetune"], parse_shots(cfg.full_finetune_shots), seeds)
    zeroshot = zeroshot_report(prep)
    result: dict[str, Any] = {
        "num_train_pool": len(prep.train_y), "num_eval": len(prep.eval_y), "logit_scale": prep.logit_scale,
        "zeroshot": {m: zeroshot[m] for m in METRICS}, "summary": summarise(runs), "runs": runs,
    }
    top = max(shots, key=lambda s: s if s != "all" else 10**9)
    result["fit_seconds_at_max_shots"] = {r["method"]: r["fit_seconds_mean"] for r in result["summary"]
                                          if r["shots"] == top}
    if cfg.wise_ft_image_alphas:
        alphas = [float(a) for a in cfg.wise_ft_image_alphas.split(",")]
        result["wise_ft_image_curve"] = wise_ft_image_curve(prep, top, seeds[0], alphas)
    if cfg.full_data:
        full = prep if cfg.full_data_train in (None, cfg.fm_train) else prepare(
            encoder, train_data=cfg.full_data_train, eval_data=cfg.fm_test, feature_cache=cfg.feature_cache)
        result["full_data"] = {"num_train": len(full.train_y), **full_data(full, cfg.raw_pixels)}
    return result


def wise_ft_image_curve(prep: Prepared, shots: Any, seed: int, alphas: list[float]) -> dict[str, Any]:
    """WiSE-FT over the image tower: eval top-1 at each alpha."""
    from finetune.methods.run import alpha_curve

    task, split = make_task(prep, shots=shots, seed=seed)
    fitted, seconds = timed_fit(prep, "wise-ft", task, split, WiseFtConfig(tower="image", alphas=alphas))
    return {"shots": shots, "seed": seed, "fit_seconds": seconds, "chosen_alpha": fitted.hyperparameters["alpha"],
            "curve": alpha_curve(prep, fitted)}


def full_data(prep: Prepared, raw_dir: str) -> dict[str, Any]:
    """Linear probe on all training features vs logistic regression on the same images' raw pixels.

    Same solver and regularisation sweep for both.
    """
    task, split = make_task(prep, shots="all", seed=1)
    fitted, seconds = timed_fit(prep, "linear-probe", task, split)
    probe = evaluate(prep, fitted)
    train_px, train_y = raw_pixels(raw_dir, "train")
    # the same training images as the probe (shard keys are train_<IDX index>), so only the features differ
    pool = torch.tensor([int(prep.train.keys[i].rsplit("_", 1)[1]) for i in prep.train_rows.tolist()])
    train_px, train_y = train_px[pool], train_y[pool]
    assert torch.equal(train_y, prep.train_y), "the shards' labels must be the IDX labels of the same images"
    test_px, test_y = raw_pixels(raw_dir, "test")
    mean, std = train_px.mean(0), train_px.std(0).clamp(min=1e-3)
    standardise = lambda x: (x - mean) / std  # noqa: E731
    names = prep.classnames
    assert names == CLASSES, "the shards' class order must be the IDX label order"
    pixel_task = make_pixel_task(standardise(train_px), train_y, names)
    # init="zero": there is no zero-shot head for pixels
    pixel_fit, pixel_seconds = timed(fit_linear_probe, pixel_task, LinearProbeConfig(init="zero"))
    with torch.no_grad():
        pixels = report_for_logits(pixel_fit.head(standardise(test_px)), test_y, names)

    def figures(report: dict[str, Any], fit_seconds: float, fit: Any) -> dict[str, Any]:
        return {**{m: report[m] for m in METRICS}, "fit_seconds": fit_seconds, "hyperparameters": fit.hyperparameters}

    return {"linear_probe": figures(probe, seconds, fitted),
            "raw_pixel_logistic_regression": figures(pixels, pixel_seconds, pixel_fit)}


def raw_pixels(directory: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 784) pixels in [0, 1] and (N,) class indices in data_tools' CLASSES order."""
    records = load_fashion_mnist(split, Path(directory)).records
    data = b"".join(r.pixels.data for r in records)
    x = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(len(records), -1).float() / 255
    return x, torch.tensor([r.cls for r in records])


def make_pixel_task(x: torch.Tensor, y: torch.Tensor, names: list[str]) -> FewShotTask:
    """All-data task on raw pixels: 20 % of each class carved for the l2 sweep, no zero-shot prior."""
    from finetune.methods.shots import sample_shots

    split = sample_shots(y, names, "all", seed=1)
    return FewShotTask(train_x=x[split.train], train_y=y[split.train], val_x=x[split.val], val_y=y[split.val],
                       zeroshot_weights=torch.zeros(len(names), x.shape[1]), logit_scale=1.0, classnames=names,
                       val_from_train=True, seed=1)


def imbalanced_emoji(cfg: BenchConfig, encoder: Encoder) -> dict[str, Any]:
    """Emoji categories, alternate categories cut to majority/ratio samples; each option vs none."""
    prep = prepare(encoder, train_data=cfg.emoji_train, eval_data=cfg.emoji_eval, label_field="category",
                   feature_cache=cfg.feature_cache)
    evaluated = sorted(set(prep.eval_y.tolist()))
    by_size = sorted(evaluated, key=lambda c: -int((prep.train_y == c).sum()))
    minority = set(by_size[1::2])
    counts = {c: cfg.majority_per_class // (cfg.imbalance_ratio if c in minority else 1) for c in evaluated}
    options = {"none": ImbalanceConfig(), "class_weight": ImbalanceConfig(class_weight=True),
               "balanced_sampling": ImbalanceConfig(balanced_sampling=True),
               "focal_gamma_2": ImbalanceConfig(focal_gamma=2.0)}
    methods = ["linear-probe", "clip-adapter", "tip-adapter-f"]
    runs = []
    for seed in [int(s) for s in cfg.seeds.split(",")]:
        train_idx, val_idx = imbalanced_split(prep.train_y, counts, seed)
        for name, option in options.items():
            task = FewShotTask(train_x=prep.train_x[train_idx], train_y=prep.train_y[train_idx],
                               val_x=prep.train_x[val_idx], val_y=prep.train_y[val_idx],
                               zeroshot_weights=prep.zeroshot_weights, logit_scale=prep.logit_scale,
                               classnames=prep.classnames, imbalance=option, seed=seed)
            for method in methods:
                fitted, seconds = timed_fit(prep, method, task, None)  # feature-level: no shot images to load
                report = evaluate(prep, fitted)
                minority_recall = [report["per_class"][prep.classnames[c]]["recall"] for c in minority]
                runs.append({"method": method, "shots": name, "seed": seed, "fit_seconds": seconds,
                             **{m: report[m] for m in METRICS},
                             "minority_recall": sum(minority_recall) / len(minority_recall)})
                print(f"imbalance: {method} {name} seed {seed}: mpcr {report['mean_per_class_recall']:.4f}",
                      file=sys.stderr, flush=True)
    zeroshot = zeroshot_report(prep)
    summary = summarise(runs)
    for row in summary:  # summarise() knows METRICS; add the minority recall mean by hand
        vals = [r["minority_recall"] for r in runs if r["method"] == row["method"] and r["shots"] == row["shots"]]
        row["minority_recall_mean"] = sum(vals) / len(vals)
        row["option"] = row.pop("shots")
    return {
        "train_counts": {prep.classnames[c]: n for c, n in counts.items()},
        "minority_classes": [prep.classnames[c] for c in sorted(minority)], "num_eval": len(prep.eval_y),
        "zeroshot": {m: zeroshot[m] for m in METRICS}, "summary": summary, "runs": runs,
    }


def imbalanced_split(labels: torch.Tensor, counts: dict[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: `counts[c]` training samples and counts[c] // 5 (>= 1) validation samples, seeded."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c, n in counts.items():
        members = torch.nonzero(labels == c).flatten()
        order = members[torch.randperm(len(members), generator=g)]
        n_val = max(1, n // 5)
        train.append(order[:n])
        val.append(order[n : n + n_val])
    return torch.cat(train), torch.cat(val)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_script_config(BenchConfig, argv, prog="benchmarks/fewshot.py")
    encoder = Encoder.load(cfg.checkpoint)
    start = time.perf_counter()
    environment = {**machine_info(("torch", "open_clip_torch"), threads=torch.get_num_threads()),
                   "checkpoint_id": encoder.checkpoint_id, "model": encoder.config.get("model_name")}
    result: dict[str, Any] = {"config": asdict(cfg), "environment": environment}
    result["fashion_mnist"] = fashion_mnist(cfg, encoder)
    if cfg.emoji_train and cfg.emoji_eval:
        result["emoji_imbalanced"] = imbalanced_emoji(cfg, encoder)
    result["total_seconds"] = time.perf_counter() - start
    print_figures(result, cfg.out)


if __name__ == "__main__":
    main()
