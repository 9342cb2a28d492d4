"""Run a few tiny-debug steps on fixed synthetic global batches, one process or many.

Used by test_distributed.py: `accelerate launch --num_processes 2 --cpu` runs
this file, the test runs `run()` in-process for one process, and compares the
metrics rows. Every rank takes its slice of the same global batch, so the
runs see the same contrastive batch of GLOBAL_BATCH pairs per step.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import open_clip
import torch

GLOBAL_BATCH = 8
STEPS = 3
WORDS = ["red", "blue", "green", "cat", "dog", "face", "car", "tree", "flag", "star", "moon", "sun"]


def global_batches(step_count: int, *, captions: bool = False) -> list[dict]:
    """Image and token batches; with `captions`, also the raw captions (as the shard loader gives them)."""
    tokenizer = open_clip.get_tokenizer("clip-tiny-64")
    generator = torch.Generator().manual_seed(1234)
    batches = []
    for step in range(step_count):
        images = torch.randn(GLOBAL_BATCH, 3, 64, 64, generator=generator)
        texts = [" ".join(WORDS[(step * 7 + i * j) % len(WORDS)] for j in range(1 + i % 4))
                 for i in range(GLOBAL_BATCH)]
        groups = torch.tensor([i % 5 for i in range(GLOBAL_BATCH)])  # pairs i and i+5 share a concept
        batches.append({"image": images, "text": tokenizer(texts), "group": groups,
                        **({"caption": texts} if captions else {})})
    return batches


def save_teacher(root: Path, model_name: str, seed: int) -> Path:
    """A teacher checkpoint dir (random weights, a sharper temperature than a fresh student's)."""
    from pretrain import checkpoint, models

    torch.manual_seed(seed)
    clip = models.create_open_clip(model_name, load_text_weights=False)
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(30.0))
    return checkpoint.save_checkpoint(root, step=1, state_dict=clip.state_dict(),
                                      model_info=models.model_info(model_name, clip))


# name -> (config overrides, forward passes per step)
VARIANTS = {
    "clip": ([], 1),
    "clip-local-loss": (["local_loss=true"], 1),
    "siglip": (["kind=siglip"], 1),
    "clip-gradcache": (["accum_steps=2"], 2),
    "clip-groups": (["positives=group"], 1),  # concept ids gathered from every rank
    # a checkpoint at the last step: _finish must not save again on any rank (it once did on rank 1 only)
    "clip-save-at-end": ([f"checkpoint_every={STEPS}"], 1),
    # a 384-d teacher: the projection's gradient must be averaged over ranks too
    "clip-distill": (["temperature=2", "kl_weight=0.7", "feature_weight=0.4"], 1),
}


def run(out: Path, variant: str, dist: object | None = None) -> None:
    """Train VARIANTS[variant] for STEPS steps into `out` (this process's share of each batch)."""
    from pretrain.config import apply_overrides
    from pretrain.named_configs import named_config
    from pretrain.distributed import Distributed
    from pretrain.train import train

    overrides, accum = VARIANTS[variant]
    dist = dist or Distributed(cpu=True)
    per_rank = GLOBAL_BATCH // dist.world_size
    micro = per_rank // accum
    batches = []
    for batch in global_batches(STEPS, captions=True):
        for part in range(accum):
            start = dist.rank * per_rank + part * micro
            batches.append({key: value[start:start + micro] for key, value in batch.items()})
    if variant == "clip-distill":  # each rank saves its own copy (same seed, same weights)
        overrides = [*overrides, f"teacher={save_teacher(out / f'teacher-{dist.rank}', 'clip-small-64', seed=2)}"]
    config = apply_overrides(named_config("tiny-debug"), [
        f"out={out}", f"batch_size={micro}", f"steps={STEPS}", "threads=1", "checkpoint_every=100",
        "augment=false", *overrides])
    result = train(config, make_epoch=lambda epoch: batches, dist=dist)
    # every rank reports the checkpoint rank 0 wrote
    assert result.checkpoint is not None and result.checkpoint.name == f"step_{STEPS:08d}", result.checkpoint


if __name__ == "__main__":
    torch.set_num_threads(1)
    from pretrain.distributed import Distributed

    shared = Distributed(cpu=True)
    for name in VARIANTS:
        run(Path(sys.argv[1]) / name, name, dist=shared)
