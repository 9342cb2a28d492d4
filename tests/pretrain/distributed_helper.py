"""Run a few tiny-debug steps on fixed synthetic global batches, one process or many.

Used by test_distributed.py: torchrun runs this file with two processes, the
test runs `run()` in-process for one process, and compares the metrics rows
and checkpoints. Every rank takes its slice of the same global batch, so the
runs see the same contrastive batch of GLOBAL_BATCH pairs per step. Each run
ends with an in-loop evaluation of fixed inputs (`FeatureSums`).
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
    from pretrain import checkpoint
    from tests.conftest import save_random_checkpoint

    return checkpoint.find_latest(save_random_checkpoint(root, model_name, seed=seed, load_text_weights=False,
                                                         adjust=lambda clip: clip.logit_scale.fill_(math.log(30.0))))


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
    # partly locked image tower (frozen blocks stay whole under FSDP), weight average in the checkpoint
    "clip-locked-ema": (["lock_image=true", "lock_image_unlocked_groups=2", "ema_decay=0.9"], 1),
}
# FSDP twins: the same run with the model sharded (distributed.fsdp=true); name -> its DDP twin
FSDP_TWINS = {f"{name}-fsdp": name for name in ("clip", "siglip", "clip-gradcache", "clip-distill", "clip-locked-ema")}
VARIANTS.update({fsdp: (VARIANTS[ddp][0] + ["fsdp=true"], VARIANTS[ddp][1]) for fsdp, ddp in FSDP_TWINS.items()})
RESUMED_STEPS = 2  # steps a resumed run adds


class FeatureSums:
    """An in-loop evaluator of fixed inputs: sums of the image and text features (a sharded model must
    evaluate on every process, in step)."""

    def run(self, encoder: object) -> list[tuple[str, float]]:
        images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(7))
        return [("image_feature_sum", float(encoder.encode_image(images).sum())),
                ("text_feature_sum", float(encoder.encode_text(["a red cat", "blue sun moon"]).sum()))]


def run(out: Path, variant: str, dist: object | None = None, resume: Path | None = None) -> None:
    """Train VARIANTS[variant] for STEPS steps into `out` (this process's share of each batch); with
    `resume` (a checkpoint), RESUMED_STEPS more steps from it."""
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
    if variant.startswith("clip-distill"):  # each rank saves its own copy (same seed, same weights)
        overrides = [*overrides, f"teacher={save_teacher(out / f'teacher-{dist.rank}', 'clip-small-64', seed=2)}"]
    steps = STEPS + RESUMED_STEPS if resume else STEPS
    config = apply_overrides(named_config("tiny-debug"), [
        f"out={out}", f"batch_size={micro}", f"steps={steps}", "threads=1", "checkpoint_every=100",
        "augment=false", *overrides, *([f"resume={resume}"] if resume else [])])
    result = train(config, evaluators=[FeatureSums()], make_epoch=lambda epoch: batches, dist=dist)
    # every rank reports the checkpoint rank 0 wrote
    assert result.checkpoint is not None and result.checkpoint.name == f"step_{steps:08d}", result.checkpoint


if __name__ == "__main__":
    torch.set_num_threads(1)
    from pretrain.distributed import Distributed

    shared = Distributed(cpu=True)
    root = Path(sys.argv[1])
    for name in VARIANTS:
        run(root / name, name, dist=shared)
    # a whole (DDP) checkpoint resumed sharded and not: the optimizer state must be split right
    for name in ("clip", "clip-fsdp"):
        run(root / f"resumed-{name}", name, dist=shared, resume=root / "clip" / "checkpoints" / f"step_{STEPS:08d}")
