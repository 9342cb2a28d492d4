"""Save and load trained adapters: small weights + a config, never a copy of the model.

An adapter directory holds
  config.json           method, checkpoint id, class names, head class and its settings, hyperparameters
  adapter.safetensors   the head's tensors (a linear head, a CLIP-Adapter MLP, a Tip-Adapter cache)
  image_tower.safetensors   only for methods that tune the image tower (full fine-tune, WiSE-FT image)
It is only meaningful on the checkpoint it was trained on; load_adapter checks.

    encoder = Encoder.load(run)
    predictor = load_adapter("runs/probe16", encoder)
    logits = predictor.logits(predictor.encode_image(images))   # (N, C), columns = predictor.classnames
"""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from data_tools.atomic_write import atomic_path, write_json_atomic
from finetune.errors import FinetuneError
from finetune.methods.task import FittedModel

if TYPE_CHECKING:
    from pretrain.encoder import Encoder

FORMAT = "clipline-adapter"
# head class name -> module defining it (imported lazily: loading a probe needs no Tip-Adapter code)
HEAD_MODULES = {
    "LinearHead": "finetune.methods.linear_probe",
    "ClipAdapterHead": "finetune.methods.clip_adapter",
    "TipAdapterHead": "finetune.methods.tip_adapter",
}


def save_adapter(out_dir: str | Path, *, method: str, fitted: FittedModel, checkpoint_id: str, classnames: list[str],
                 extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter files into `out_dir` (each atomically; config.json last)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "adapter.safetensors") as tmp:
        save_file(_tensors(fitted.head), tmp)
    if fitted.image_tower is not None:
        with atomic_path(out / "image_tower.safetensors") as tmp:
            save_file(_tensors(fitted.image_tower), tmp)
    config = {
        "format": FORMAT,
        "version": 1,
        "method": method,
        "checkpoint_id": checkpoint_id,
        "classnames": list(classnames),
        "head": type(fitted.head).__name__,
        "head_config": fitted.head.saved_config(),
        "hyperparameters": fitted.hyperparameters,
        "image_tower": fitted.image_tower is not None,
        **(extra or {}),
    }
    write_json_atomic(out / "config.json", config)
    return out


class AdapterPredictor:
    """A loaded adapter: image features (or images) -> class logits."""

    def __init__(self, *, config: dict[str, Any], head: nn.Module, encoder: Encoder,
                 image_tower: nn.Module | None) -> None:
        self.config = config
        self.classnames: list[str] = config["classnames"]
        self.head = head.eval()
        self.encoder = encoder
        self.image_tower = image_tower
        # encoder-like, so code that encodes labelled shards with an encoder can take a predictor
        self.preprocess = encoder.preprocess
        self.checkpoint_id = encoder.checkpoint_id

    def encode_image(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) preprocessed images -> (N, D) the features this adapter expects."""
        if self.image_tower is None:
            return self.encoder.encode_image(images)
        with torch.no_grad():
            return torch.nn.functional.normalize(self.image_tower(images), dim=-1).float()

    def logits(self, image_features: Tensor) -> Tensor:
        """(N, D) L2-normalised image features -> (N, C) logits, columns in `classnames` order."""
        with torch.no_grad():
            return self.head(image_features.float())

    def predict(self, image_features: Tensor) -> Tensor:
        """(N,) predicted class indices (the README's library example)."""
        return self.logits(image_features).argmax(dim=1)


def load_adapter(path: str | Path, encoder: Encoder) -> AdapterPredictor:
    """Load the adapter in `path` for `encoder`; FinetuneError if it was trained on another checkpoint."""
    path = Path(path)
    config = read_adapter_config(path)
    if config["checkpoint_id"] != encoder.checkpoint_id:
        raise FinetuneError(
            f"adapter {path} was trained on checkpoint {config['checkpoint_id']} but this checkpoint is "
            f"{encoder.checkpoint_id}; use the `checkpoint` it was trained with, or retrain the adapter"
        )
    module = importlib.import_module(HEAD_MODULES[config["head"]])
    head = getattr(module, config["head"]).from_saved(load_file(path / "adapter.safetensors"), config["head_config"])
    tower = None
    if config.get("image_tower"):
        tower = copy.deepcopy(encoder.model.visual).eval()
        tower.load_state_dict(load_file(path / "image_tower.safetensors"))
    return AdapterPredictor(config=config, head=head, encoder=encoder, image_tower=tower)


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    """config.json of an adapter directory; FinetuneError if `path` is not one."""
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FinetuneError(
            f"{path} is not an adapter directory ({err}); give the output directory of `clipline finetune`"
        ) from err
    if config.get("format") != FORMAT or config.get("head") not in HEAD_MODULES:
        raise FinetuneError(f"{file} is not a clipline adapter config; give the output directory of "
                            "`clipline finetune`")
    return config


def _tensors(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
