"""Fusion heads on real shards: image-only, text-only, concat, cross-attention and gated fusion.

    python benchmarks/fusion.py --checkpoint RUN --emoji-train DIR --emoji-eval DIR \\
        [--fmnist-train DIR --fmnist-eval DIR] [--out JSON]

Emoji: image + caption -> category and subcategory (two tasks, one multi-task head).
Fashion-MNIST: image + a noisy caption -> class; the caption names a wrong class
with probability --caption-noise (default 0.4), so neither modality is enough
alone. For every head: top-1 and macro-F1 per task with both modalities, with
the caption missing at test time (image only) and with the image missing (text
only). Towers frozen; tower outputs cached once per dataset and shared by all
heads through the same `train_fusion` the CLI runs. Prints one JSON object.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipline.flags import parse_script_config
from data_tools.encode_sample import EncodedSample
from data_tools.loader import list_shards, read_dataset_info
from data_tools.shard_writer import ShardWriter
from data_tools.sources.fashion_captions import class_captions
from data_tools.tar_samples import iter_tar_samples
from finetune.fusion.config import FusionConfig
from finetune.fusion.run import train_fusion
from finetune.train_eval_paths import TrainEvalPathsConfig
from figures import print_figures, timed  # benchmarks/figures.py
from machine import machine_info  # benchmarks/machine.py (this script's folder is on sys.path)

FUSIONS = ("attention", "image", "text", "concat", "gated")  # attention first: its cache holds the tokens too


@dataclass(kw_only=True)
class BenchConfig:
    """Fusion heads vs single-modality heads on emoji and Fashion-MNIST."""

    checkpoint: str
    """clipline run or checkpoint dir (the shared representation)."""
    emoji_train: str
    """Emoji training shards (labels category, subcategory)."""
    emoji_eval: str
    """Emoji evaluation shards (e.g. the unseen-concept val split)."""
    fmnist_train: str | None = None
    """Fashion-MNIST training shards (label field `class`)."""
    fmnist_eval: str | None = None
    """Fashion-MNIST test shards."""
    fmnist_train_samples: int = 6000
    """Fashion-MNIST training subset (the first N samples)."""
    fmnist_eval_samples: int = 2000
    """Fashion-MNIST test subset."""
    caption_noise: float = 0.4
    """Probability that a Fashion-MNIST caption names a random wrong class."""
    fusions: str = ",".join(FUSIONS)
    """Heads to compare."""
    epochs: int = 40
    """Epochs per head (cached features: cheap)."""
    modality_dropout: float = 0.3
    """Training-time modality dropout for every head."""
    seed: int = 0
    """Seed of the heads and of the caption noise."""
    out: str | None = None
    """Also write the JSON here."""


def noisy_caption_shards(source: str, out: Path, *, count: int, noise: float, seed: int) -> Path:
    """Copy the first `count` samples of `source` with new captions: with probability `noise` the
    caption describes a random other class (the label is kept)."""
    info = read_dataset_info(source)
    classes = info["label_fields"]["class"]
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    writer, flipped = ShardWriter(out, shard_size=count), 0
    samples = (sample for shard in list_shards(source) for sample in iter_tar_samples(shard, lambda *_: None))
    for sample in itertools.islice(samples, count):
        meta = json.loads(sample["json"])
        shown = meta["labels"]["class"]
        if rng.random() < noise:
            shown = rng.choice([c for c in classes if c != shown])
            flipped += 1
        # a random template for every sample, so the wording carries no hint of a flip
        caption = rng.choice(class_captions(shown))
        meta["caption"], meta["captions"] = caption, [caption]
        images = {ext: sample[ext] for ext in ("jpg", "png") if ext in sample}
        writer.write(EncodedSample(key=sample["__key__"], files={**images, "txt": caption.encode(),
                                                                 "json": json.dumps(meta).encode()}))
    shards = writer.close()
    written = sum(shards.values())
    (out / "dataset.json").write_text(json.dumps({**info, "shards": shards, "num_samples": written,
                                                  "caption_noise": {"p": noise, "flipped": flipped}}))
    return out


def compare_heads(train: str, eval_data: str, tasks: str, cfg: BenchConfig, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    shared: dict = {}  # tower outputs computed once per dataset, reused by every head
    for fusion in cfg.fusions.split(","):
        report, seconds = timed(
            train_fusion, TrainEvalPathsConfig(checkpoint=cfg.checkpoint, train_data=train, eval_data=eval_data),
            out=str(work / fusion), config=FusionConfig(fusion=fusion, tasks=tasks, epochs=cfg.epochs, seed=cfg.seed,
                                                        modality_dropout=cfg.modality_dropout),
            log=lambda _: None, shared_cache=shared)
        results[fusion] = {
            condition: {task: {"top1": round(r["top1"], 4), "macro_f1": round(r["macro_f1"], 4)}
                        for task, r in per_task.items()}
            for condition, per_task in report["summary"].items()
        }
        results[fusion]["seconds"] = round(seconds, 1)
        if "gate_mean_image_share" in report:
            results[fusion]["gate_mean_image_share"] = round(report["gate_mean_image_share"]["both"], 4)
        results[fusion]["n_eval"] = report["n"]
        print(f"{Path(train).name} {fusion}: {json.dumps(results[fusion]['both'])}", flush=True)
    return results


def main() -> None:
    cfg = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/fusion.py")
    torch.manual_seed(cfg.seed)
    environment = machine_info(("torch", "open_clip_torch"), threads=torch.get_num_threads())
    result: dict[str, Any] = {"benchmark": "fusion", "environment": environment, "checkpoint": cfg.checkpoint,
                              "epochs": cfg.epochs, "modality_dropout": cfg.modality_dropout, "towers": "frozen"}
    with tempfile.TemporaryDirectory(prefix="fusion-bench-") as tmp:
        work = Path(tmp)
        result["emoji"] = compare_heads(cfg.emoji_train, cfg.emoji_eval, "category,subcategory", cfg, work / "emoji")
        if cfg.fmnist_train and cfg.fmnist_eval:
            train = noisy_caption_shards(cfg.fmnist_train, work / "fm-train", count=cfg.fmnist_train_samples,
                                         noise=cfg.caption_noise, seed=cfg.seed)
            test = noisy_caption_shards(cfg.fmnist_eval, work / "fm-eval", count=cfg.fmnist_eval_samples,
                                        noise=cfg.caption_noise, seed=cfg.seed + 1)
            result["fashion_mnist"] = compare_heads(str(train), str(test), "class", cfg, work / "fashion")
            result["fashion_mnist"]["caption_noise"] = cfg.caption_noise
    print_figures(result, cfg.out, indent=1)


if __name__ == "__main__":
    main()
