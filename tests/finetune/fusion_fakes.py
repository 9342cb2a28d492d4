"""Test doubles for the fusion, compression and heat-map tests: a tiny real checkpoint on disk."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from PIL import Image

from data_tools.image_ops import encode_png
from pretrain import models
from tests.conftest import save_random_checkpoint
from tests.tar_writing import write_shard_dir

TINY_NAME = "fusion-test-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_clip(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised 64-px open_clip model registered under TINY_NAME."""
    models.register_model_config(TINY_NAME, TINY_CONFIG)
    torch.manual_seed(seed)
    return models.create_open_clip(TINY_NAME)


def tiny_checkpoint(run_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random model as a clipline checkpoint; returns the run dir."""
    models.register_model_config(TINY_NAME, TINY_CONFIG)
    return save_random_checkpoint(run_dir, TINY_NAME, seed=seed, step=0)


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40)}
WORDS = ["north", "south", "east", "west"]


def write_two_task_shards(out: Path, per_class: int, *, seed: int = 0, drop_word_every: int = 0) -> Path:
    """Shards where task `colour` is visible only in the image and task `word` only in the caption.

    Each sample: a 64-px image, a solid square of its colour on grey at a random place;
    caption "<word> thing"; `.json` labels {colour, word}. With `drop_word_every` = k,
    every k-th sample has no `word` label (to test skipping). 16 samples to a shard.
    """
    rng = random.Random(seed)
    names = list(COLOURS)
    samples = [(c, w) for c in range(len(names)) for w in range(len(WORDS)) for _ in range(per_class)]
    rng.shuffle(samples)
    written = []
    for index, (c, w) in enumerate(samples):
        image = Image.new("RGB", (64, 64), (128, 128, 128))
        x, y = rng.randrange(0, 40), rng.randrange(0, 40)
        image.paste(COLOURS[names[c]], (x, y, x + 24, y + 24))
        labels = {"colour": names[c], "word": WORDS[w]}
        if drop_word_every and index % drop_word_every == 0:
            del labels["word"]
        caption = f"{WORDS[w]} thing"
        meta = {"key": f"s{index:05d}", "caption": caption, "labels": labels}
        written.append((f"s{index:05d}", {"png": encode_png(image), "txt": caption.encode(),
                                          "json": json.dumps(meta).encode()}))
    info = {"image_size": 64, "source": "synthetic", "label_fields": {"colour": names, "word": WORDS}}
    return write_shard_dir(out, written, 16, info)
