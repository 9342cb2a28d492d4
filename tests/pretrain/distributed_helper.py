"""Run a few tiny-debug steps on fixed synthetic global batches, one process or many.

Used by test_distributed.py: `accelerate launch --num_processes 2 --cpu` runs
this file, the test runs `run()` in-process for one process, and compares the
metrics rows. Every rank takes its slice of the same global batch, so the
runs see the same contrastive batch of GLOBAL_BATCH pairs per step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import open_clip
import torch

GLOBAL_BATCH = 8
STEPS = 3
WORDS = ["red", "blue", "green", "cat", "dog", "face", "car", "tree", "flag", "star", "moon", "sun"]


def global_batches(step_count: int) -> list[dict]:
    tokenizer = open_clip.get_tokenizer("clip-tiny-64")
    generator = torch.Generator().manual_seed(1234)
    batches = []
    for step in range(step_count):
        images = torch.randn(GLOBAL_BATCH, 3, 64, 64, generator=generator)
        captions = [" ".join(WORDS[(step * 7 + i * j) % len(WORDS)] for j in range(1 + i % 4))
                    for i in range(GLOBAL_BATCH)]
        batches.append({"image": images, "text": tokenizer(captions)})
    return batches


# name -> (config overrides, forward passes per step)
VARIANTS = {
    "clip": ([], 1),
    "clip-local-loss": (["local_loss=true"], 1),
    "siglip": (["kind=siglip"], 1),
    "clip-gradcache": (["accum_steps=2"], 2),
}


def run(out: Path, variant: str, dist: object | None = None) -> None:
    """Train VARIANTS[variant] for STEPS steps into `out` (this process's share of each batch)."""
    from pretrain.config import apply_overrides, named_config
    from pretrain.distributed import Distributed
    from pretrain.train import train

    overrides, accum = VARIANTS[variant]
    dist = dist or Distributed(cpu=True)
    per_rank = GLOBAL_BATCH // dist.world_size
    micro = per_rank // accum
    batches = []
    for batch in global_batches(STEPS):
        for part in range(accum):
            start = dist.rank * per_rank + part * micro
            batches.append({"image": batch["image"][start:start + micro], "text": batch["text"][start:start + micro]})
    config = apply_overrides(named_config("tiny-debug"), [
        f"out={out}", f"batch_size={micro}", f"steps={STEPS}", "threads=1", "checkpoint_every=100",
        "augment=false", *overrides])
    train(config, make_epoch=lambda epoch: batches, dist=dist)


if __name__ == "__main__":
    torch.set_num_threads(1)
    from pretrain.distributed import Distributed

    shared = Distributed(cpu=True)
    for name in VARIANTS:
        run(Path(sys.argv[1]) / name, name, dist=shared)
