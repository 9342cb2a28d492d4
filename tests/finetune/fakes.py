"""Test doubles for the evaluation tests: synthetic shards and encoders with known answers.

`ColourEncoder` maps a solid-colour image to the embedding of the class that
colour stands for, and a prompt to the embedding of the class name it contains,
so a zero-shot or retrieval evaluation over it has a result known in advance.
`tiny_encoder` is the real Encoder over a random micro open_clip model, for
tests that need real towers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from data_tools.image_ops import encode_png
from pretrain import models
from pretrain.encoder import Encoder
from tests.conftest import save_random_checkpoint
from tests.tar_writing import write_shard_dir

PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]  # fmt: skip


class ColourEncoder:
    """Encoder double: image colour k -> unit vector perm[k]; a prompt -> the vector of the class it names.

    `perm` has one entry per colour (default: identity over the classes).

    Vectors live in D = num_classes + 2 dims; a small template-dependent
    component is added to prompts so ensembling actually averages something.
    """

    def __init__(self, classnames: Sequence[str], perm: Sequence[int] | None = None, image_size: int = 16) -> None:
        self.classnames = list(classnames)
        self.perm = list(perm) if perm is not None else list(range(len(classnames)))
        self.image_size = image_size
        self.embed_dim = len(classnames) + 2
        self.config: dict = {}
        self.checkpoint_id = "colour-fake"
        self.model = None
        self.tokenizer = None
        self.encoded_images = 0

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        array = np.asarray(image.resize(size).convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.encoded_images += images.shape[0]
        colours = images.mean(dim=(2, 3)) * 255.0  # (B, 3)
        palette = torch.tensor(PALETTE[: len(self.perm)], dtype=torch.float32)  # (C, 3)
        colour_class = torch.cdist(colours, palette).argmin(dim=1)  # (B,)
        out = torch.zeros(images.shape[0], self.embed_dim)
        out[torch.arange(images.shape[0]), torch.tensor(self.perm)[colour_class]] = 1.0
        return out

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.embed_dim)
        for row, text in enumerate(texts):
            # longest matching name wins so "cat" does not match inside "catfish"
            matches = [i for i, name in enumerate(self.classnames) if name in text]
            if matches:
                out[row, max(matches, key=lambda i: len(self.classnames[i]))] = 1.0
            out[row, -1 - (len(text) % 2)] = 0.3  # template-dependent, class-independent
        return torch.nn.functional.normalize(out, dim=-1)


def write_shards(out: Path, classes: Sequence[str], per_class: int, *, image_size: int = 16,
                 label: Literal["cls", "json", "none"] = "cls", label_fields: dict[str, Sequence[str]] | None = None,
                 captions: bool = False) -> Path:
    """Solid-colour images, class i in PALETTE[i], 7 to a shard; returns `out` with dataset.json. `label`: the class
    as .cls (indexing dataset.json's classes) and .json `label`, as .json `label` only, or not at all."""
    written = []
    for j in range(per_class):
        for c in range(len(classes)):
            key = f"s{c:02d}_{j:03d}"
            meta: dict = {"key": key, "caption": f"a picture of {classes[c]}", "source": "synthetic"}
            if label != "none":
                meta["label"] = classes[c]
            if label_fields:
                meta["labels"] = {field: names[c % len(names)] for field, names in label_fields.items()}
            if captions:
                meta["captions"] = [f"a picture of {classes[c]}", f"{classes[c]} number {j}"]
            png = encode_png(Image.new("RGB", (image_size, image_size), PALETTE[c]))
            files = {"png": png, "txt": meta["caption"].encode(), "json": json.dumps(meta).encode()}
            if label == "cls":
                files["cls"] = str(c).encode()
            written.append((key, files))
    info: dict = {"image_size": image_size, "source": "synthetic"}
    if label == "cls":
        info["classes"] = list(classes)
    if label_fields:
        info["label_fields"] = {k: list(v) for k, v in label_fields.items()}
    return write_shard_dir(out, written, 7, info)


TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


TINY_MODEL = "clipline-eval-micro"


def tiny_encoder(seed: int = 0) -> Encoder:
    """A real Encoder over a random micro open_clip model (16 px, 32-d)."""
    models.register_model_config(TINY_MODEL, TINY_CONFIG)
    torch.manual_seed(seed)
    return Encoder.from_open_clip(TINY_MODEL)


def save_tiny_checkpoint(run_dir: Path, seed: int = 0) -> Path:
    """A run dir holding one checkpoint of the micro model (as `clipline pretrain` writes it)."""
    models.register_model_config(TINY_MODEL, TINY_CONFIG)
    return save_random_checkpoint(run_dir, TINY_MODEL, seed=seed)
