"""`Encoder`: a trained model turned into two functions, images -> vectors, texts -> vectors.

Everything downstream (zero-shot, adapters, retrieval) encodes through this
class, so they all see the same preprocessing, tokenizer and normalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pretrain import checkpoint, models
from pretrain.models.attention import explicit_attention_pays, use_explicit_attention
from pretrain.models.length_buckets import run_length_sorted
from pretrain.errors import PretrainError

TEXT_BATCH = 512  # captions encoded per forward; bounds memory for long lists


class Encoder:
    """L2-normalised float32 image and text embeddings from one model (no grad)."""

    def __init__(self, *, model: nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable[[list[str]], torch.Tensor], config: dict[str, Any],
                 checkpoint_id: str, device: str | torch.device = "cpu", owns_model: bool = False) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if explicit_attention_pays(self.device, models.max_sequence_length(config["model_name"])):
            use_explicit_attention(self.model)  # same maths; the fused CPU kernel is slow for short sequences
        if owns_model:
            # same values, the bias added inside the CPU bf16 matmul (clip-tiny-64 image tower, batch 256, 2-core
            # machine: ~10 % less time); a model shared with a trainer keeps the trainer's choice
            models.use_bias_fused_linear(self.model)
        self.preprocess, self.tokenizer, self.config, self.checkpoint_id = preprocess, tokenizer, config, checkpoint_id
        # Trimming padding is exact for causal/EOT-pooled and masked HF towers; it saves most text compute.
        self._towers = models.TwoTower(model, name=config.get("model_name", "?"), dynamic_padding=True)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Encoder:
        """From a run dir (its newest checkpoint) or a checkpoint dir."""
        ckpt = checkpoint.resolve_checkpoint(path)
        info = checkpoint.read_model_info(ckpt)
        try:
            clip = models.clip_from_info(info)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise PretrainError(f"{ckpt / checkpoint.CONFIG_FILE} describes no model open_clip can build "
                                f"({type(err).__name__}: {err}); the checkpoint is damaged or from another "
                                "tool") from err
        weights = checkpoint.read_weights(ckpt)
        try:
            incompatible = clip.load_state_dict(weights, strict=False)
        except RuntimeError as err:  # a tensor of another shape
            raise PretrainError(f"{ckpt / checkpoint.WEIGHTS_FILE} does not fit model {info['model_name']!r} "
                                f"({str(err).splitlines()[-1].strip()[:160]}): the checkpoint is from another "
                                "config or damaged") from err
        if incompatible.missing_keys or incompatible.unexpected_keys:
            raise PretrainError(
                f"{ckpt / checkpoint.WEIGHTS_FILE} does not match model {info['model_name']!r} "
                f"(missing {incompatible.missing_keys[:3]}, unexpected {incompatible.unexpected_keys[:3]}): "
                "the checkpoint is from another config or damaged"
            )
        checkpoint_id = checkpoint.file_digest(ckpt / checkpoint.WEIGHTS_FILE)
        return cls._from_clip(clip, info=info, checkpoint_id=checkpoint_id, device=device, owns_model=True)

    @classmethod
    def from_open_clip(cls, model_name: str, pretrained: str | None = None,
                       device: str | torch.device = "cpu") -> Encoder:
        """From any open_clip config name, with weights from a tag or file (e.g. an open_clip_train .pt)."""
        if pretrained is not None and not Path(pretrained).is_file() and \
                pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
            raise PretrainError(f"pretrained={pretrained!r} is neither a file nor a known tag of {model_name!r}")
        clip = models.create_open_clip(model_name, pretrained=pretrained)
        info = models.model_info(model_name, clip)
        if pretrained is not None and Path(pretrained).is_file():
            checkpoint_id = checkpoint.file_digest(Path(pretrained))
        else:
            checkpoint_id = checkpoint.state_dict_digest(clip.state_dict())
        return cls._from_clip(clip, info=info, checkpoint_id=checkpoint_id, device=device, owns_model=True)

    @classmethod
    def from_model(cls, model: nn.Module, *, model_name: str, checkpoint_id: str = "",
                   device: str | torch.device | None = None) -> Encoder:
        """Wrap an in-memory open_clip model (in-loop evaluation). The model is put in eval mode."""
        info = models.model_info(model_name, model)
        device = device if device is not None else next(model.parameters()).device
        return cls._from_clip(model, info=info, checkpoint_id=checkpoint_id or "in-memory", device=device)

    @classmethod
    def _from_clip(cls, clip: nn.Module, *, info: dict[str, Any], checkpoint_id: str,
                   device: str | torch.device, owns_model: bool = False) -> Encoder:
        pp_cfg = open_clip.transform.PreprocessCfg(**info["preprocess"])
        preprocess = open_clip.transform.image_transform_v2(pp_cfg, is_train=False)
        tokenizer = open_clip.get_tokenizer(info["model_name"],
                                            context_length=info["tokenizer"]["context_length"])
        return cls(model=clip, preprocess=preprocess, tokenizer=tokenizer, config=info,
                   checkpoint_id=checkpoint_id, device=device, owns_model=owns_model)

    @property
    def image_size(self) -> int:
        size = self.config["preprocess"]["size"]
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def embed_dim(self) -> int:
        return int(self.config["model_cfg"]["embed_dim"])

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, D) unit vectors."""
        return _unit_float32(self._towers.encode_image(images.to(self.device, torch.float32)))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """B captions -> (B, D) unit vectors."""
        if isinstance(texts, str):
            raise PretrainError("encode_text takes a list of strings, not one string: wrap it as [text]")
        return self.encode_tokens(self.tokenizer(list(texts)))

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor, *, chunk: int = TEXT_BATCH) -> torch.Tensor:
        """(B, L) tokens from `self.tokenizer` -> (B, D) unit vectors, in input order.

        Where padding can be cut exactly, captions are encoded `chunk` at a time sorted by length, each
        chunk padded only to its own longest; otherwise in input order.
        """
        if len(tokens) == 0:
            return torch.zeros(0, self.embed_dim)
        tokens = tokens.to(self.device)  # (B, L)
        if self._towers.dynamic_padding:
            features = run_length_sorted(self._towers.encode_text, tokens, self._towers.pad_id, chunk=chunk)
        else:
            features = torch.cat([self._towers.encode_text(tokens[i:i + chunk]) for i in range(0, len(tokens), chunk)])
        return _unit_float32(features)  # (B, D)


def _unit_float32(features: torch.Tensor) -> torch.Tensor:
    """Features as float32 unit vectors; under bf16 autocast they were normalised in bf16, so again here."""
    if features.dtype == torch.float32:
        return features
    return F.normalize(features.float(), dim=-1)
