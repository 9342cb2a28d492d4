"""Loader throughput: decoded + transformed 64-px samples/s with 2 DataLoader workers.

    flock /tmp/clipline-cpu.lock .venv/bin/python benchmarks/loader_throughput.py [--data DIR]

Reads the emoji shards (built into a temp dir from the npm cache unless --data is
given) endlessly (`resampled=True`, shard + sample shuffle, batch 128) and reports
steady-state samples/s after a warm-up and CPU ms per 1,000 samples (all processes;
robust to other jobs on the machine), median of 3 interleaved rounds, for:
- ours, open_clip's eval transform at 64 px, captions as strings;
- ours, open_clip's train transform + open_clip tokenizer (what pretraining consumes);
- webdataset's own idiomatic pipeline (`WebDataset(...).decode("pil").to_tuple(...)`),
  same transform and batch size, as the peer; the ratio is measured in this one run.
Also the wall time of one full non-resampled epoch including worker start-up.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import webdataset as wds

from machine import cpu_seconds, machine_info  # benchmarks/machine.py (this script's folder is on sys.path)
from clipline.flags import parse_script_config
from data_tools.build import BuildConfig, build_shards
from data_tools.loader import LoaderConfig, list_shards, make_loader
from data_tools.sources import SourceConfig, load_source

WORKERS, BATCH, IMAGE_SIZE = 2, 128, 64
WARMUP_BATCHES, MEASURE_SAMPLES, ROUNDS = 3, 6_000, 3


def measure(make_loader_fn, size_of) -> dict:
    """Wall-clock samples/s after a warm-up, and CPU cost per sample over all processes.

    Other people's jobs share this 2-core machine, so wall-clock rates move with their
    load; CPU seconds per sample (this process + its workers) do not, and
    `cpu_bound_samples_per_s_2_cores` = 2 / (CPU s per sample) is the rate a quiet
    2-core machine would reach if the loader were the only work.
    """
    loader = make_loader_fn()
    cpu_start = cpu_seconds()
    iterator = iter(loader)
    for _ in range(WARMUP_BATCHES):
        next(iterator)
    count, start = 0, time.perf_counter()
    while count < MEASURE_SAMPLES:
        count += size_of(next(iterator))
    seconds = time.perf_counter() - start
    del iterator  # joins the DataLoader workers, so their CPU time is counted below
    gc.collect()
    cpu = cpu_seconds() - cpu_start
    total = count + WARMUP_BATCHES * BATCH
    return {"samples_per_s": round(count / seconds, 1), "cpu_ms_per_1k_samples": round(1e6 * cpu / total, 1),
            "cpu_bound_samples_per_s_2_cores": round(2 * total / cpu, 1)}


def median_of_rounds(rounds: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} | {"rounds": rounds}


def peer_loader(shards: list[str], transform) -> wds.WebLoader:
    dataset = (wds.WebDataset(shards, resampled=True, shardshuffle=True, nodesplitter=wds.split_by_node)
               .shuffle(1000).decode("pil").to_tuple("jpg", "txt", "cls").map_tuple(transform, lambda t: t, int)
               .batched(BATCH))
    return wds.WebLoader(dataset, batch_size=None, num_workers=WORKERS)


@dataclass(kw_only=True)
class BenchConfig:
    """Loader throughput, ours against the plain webdataset pipeline."""

    data: Path | None = None
    """Shard directory (default: build emoji into a temp dir)."""


def main() -> None:
    args = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/loader_throughput.py",
                        description=__doc__.splitlines()[0])
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="clipline-loader-bench-") as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "emoji"
            build_shards(load_source("emoji", SourceConfig()), BuildConfig(out=data, progress=False, shard_size=500))
        shards = list_shards(data)
        eval_tf = open_clip.image_transform(IMAGE_SIZE, is_train=False)
        train_tf = open_clip.image_transform(IMAGE_SIZE, is_train=True)
        tokenizer = open_clip.get_tokenizer("ViT-B-32")

        def ours(image_transform, tokenize=None, caption="first"):
            config = LoaderConfig(batch_size=BATCH, num_workers=WORKERS, shuffle=True, resampled=True, caption=caption)
            return make_loader(shards, config, image_transform=image_transform, tokenize=tokenize)

        figures = {"batch_size": BATCH, "workers": WORKERS, "image_size": IMAGE_SIZE, "shards": len(shards),
                   "machine": machine_info(("torch", "torchvision", "webdataset", "pillow", "open_clip_torch")),
                   "load_average_before": os.getloadavg()[0]}
        runs = {
            "ours_eval_transform": (lambda: ours(image_transform=eval_tf), lambda b: len(b["key"])),
            "ours_train_transform_tokenized": (
                lambda: ours(image_transform=train_tf, tokenize=tokenizer, caption="random"), lambda b: len(b["key"])),
            "webdataset_idiomatic_eval_transform": (lambda: peer_loader(shards, eval_tf), lambda b: len(b[0])),
        }
        rounds: dict[str, list[dict]] = {name: [] for name in runs}
        for _ in range(ROUNDS):  # interleaved, so load from other jobs hits every variant alike
            for name, (make, size_of) in runs.items():
                rounds[name].append(measure(make, size_of))
        figures |= {name: median_of_rounds(results) for name, results in rounds.items()}
        ours_fig, peer_fig = figures["ours_eval_transform"], figures["webdataset_idiomatic_eval_transform"]
        figures["ratio_ours_over_webdataset_wall"] = round(ours_fig["samples_per_s"] / peer_fig["samples_per_s"], 2)
        figures["ratio_ours_over_webdataset_cpu"] = round(
            peer_fig["cpu_ms_per_1k_samples"] / ours_fig["cpu_ms_per_1k_samples"], 2)
        start = time.perf_counter()
        epoch = make_loader(shards, LoaderConfig(batch_size=BATCH, num_workers=WORKERS, shuffle=True),
                            image_transform=eval_tf)
        n = sum(len(b["key"]) for b in epoch)
        seconds = time.perf_counter() - start
        figures["one_epoch_with_startup"] = {"samples": n, "seconds": round(seconds, 2),
                                             "samples_per_s": round(n / seconds, 1)}
    figures["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
