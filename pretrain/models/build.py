"""Building towers: an open_clip model by config name, locked / compiled / patched for training.

`build_model` gives the `TwoTower` the loop trains; `model_info` and
`clip_from_info` are the two sides of what a checkpoint's config.json records.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
import open_clip
import torch
import transformers
from torch import nn

from pretrain.models.attention import use_explicit_attention
from pretrain.models.registry import (
    TEXT_TOWER_KEYS,
    model_config,
    portable_text_ref,
    register_model_config,
    resolve_text_ref,
    sigmoid_variant,
)
from pretrain.models.two_tower import TwoTower, is_hf_text


def create_open_clip(name: str, *, pretrained: str | None = None, load_text_weights: bool = True,
                     patch_dropout: float = 0.0) -> nn.Module:
    """Build an open_clip model by config name; `load_text_weights` loads a HF tower's weights."""
    model_config(name)
    with quiet_model_building():
        return open_clip.create_model(
            name, pretrained=pretrained, pretrained_text=load_text_weights,
            force_patch_dropout=patch_dropout or None, output_dict=True,
        )


def compile_towers(towers: TwoTower) -> None:
    """torch.compile the towers' transformer blocks in place (state-dict keys unchanged).

    Blocks, not the whole TwoTower: the memoised locked-text path and the
    pooled last block / length buckets are Python around the blocks, and each
    block is one graph that every block of the same width reuses. The text
    blocks see a few lengths (pad_multiple rounds them), so they recompile a
    few times, then run compiled.
    """
    clip = towers.clip
    transformers = [clip.visual.transformer] if hasattr(clip.visual, "transformer") else []
    if hasattr(clip, "token_embedding"):
        transformers.append(clip.transformer)
    elif is_hf_text(clip) and not towers.text_locked:
        clip.text.transformer.compile()
    if not transformers:
        clip.visual.compile()
    for transformer in transformers:
        for block in transformer.resblocks:
            block.compile()


def build_model(name: str, *, pretrained: str | None = None, lock_text: bool = False,
                lock_text_unlocked_layers: int = 0, lock_image: bool = False,
                lock_image_unlocked_groups: int = 0, patch_dropout: float = 0.0,
                grad_checkpointing: bool = False, init_logit_bias: float | None = None,
                dynamic_padding: bool = True, pad_multiple: int = 1,
                explicit_attention: bool = False, pooled_last_block: bool = True,
                text_buckets: int = 1, channels_last: bool = False) -> TwoTower:
    """Build the trainable two-tower model for config `name` (see module docstring).

    `channels_last` stores the image tower's weights, and feeds it images, in NHWC order (same maths;
    oneDNN's convolutions run faster in it on CPU).

    With `init_logit_bias` (SigLIP) the model is registered as `<name>-sigmoid`;
    `TwoTower.name` says which name its checkpoints carry.
    """
    if init_logit_bias is not None:
        name = sigmoid_variant(name, init_logit_bias)
    clip = create_open_clip(name, pretrained=pretrained, patch_dropout=patch_dropout)
    # LiT-style locks; a HF tower's projection head stays trainable
    if lock_image:
        clip.lock_image_tower(unlocked_groups=lock_image_unlocked_groups)
    if lock_text and is_hf_text(clip) and lock_text_unlocked_layers:
        # open_clip's HF lock does not know BERT's layer list: freeze all, then free the last layers
        clip.lock_text_tower(unlocked_layers=0)
        for layer in clip.text.transformer.encoder.layer[-lock_text_unlocked_layers:]:
            layer.requires_grad_(True)
    elif lock_text:
        clip.lock_text_tower(unlocked_layers=lock_text_unlocked_layers)
    if grad_checkpointing:
        clip.set_grad_checkpointing(True)
    if explicit_attention:
        use_explicit_attention(clip)
    if channels_last:
        clip.visual.to(memory_format=torch.channels_last)
    return TwoTower(clip, name=name, dynamic_padding=dynamic_padding, pad_multiple=pad_multiple,
                    pooled_last_block=pooled_last_block, text_buckets=text_buckets, channels_last=channels_last)


def model_info(name: str, clip: nn.Module) -> dict:
    """What a checkpoint's config.json says about its model (enough to rebuild it, on any machine)."""
    cfg = model_config(name)
    text_cfg = cfg.get("text_cfg", {})
    return portable_model_info({
        "model_name": name,
        "model_cfg": cfg,
        "tokenizer": {
            "context_length": int(text_cfg.get("context_length", 77)),
            "hf_tokenizer_name": text_cfg.get("hf_tokenizer_name"),
        },
        "preprocess": dict(clip.visual.preprocess_cfg),
    })


def portable_model_info(info: dict) -> dict:
    """`info` with every pretrained text-tower folder named by its package (`{"package": NAME}`), not its path."""
    info = copy.deepcopy(info)
    text_cfg = info.get("model_cfg", {}).get("text_cfg", {})
    for key in TEXT_TOWER_KEYS:
        if key in text_cfg:
            text_cfg[key] = portable_text_ref(text_cfg[key])
    if "hf_tokenizer_name" in info.get("tokenizer", {}):
        info["tokenizer"]["hf_tokenizer_name"] = portable_text_ref(info["tokenizer"]["hf_tokenizer_name"])
    return info


def resolved_model_cfg(info: dict) -> dict:
    """The open_clip config a checkpoint's config.json describes, with its text-tower folders found on this machine.

    Package references and older checkpoints' absolute paths both resolve
    (see `registry.resolve_text_ref`); a missing package is a PretrainError
    that names it.
    """
    cfg = copy.deepcopy(info["model_cfg"])
    text_cfg = cfg.get("text_cfg", {})
    for key in TEXT_TOWER_KEYS:
        if text_cfg.get(key):
            text_cfg[key] = resolve_text_ref(text_cfg[key])
    return cfg


def clip_from_info(info: dict) -> nn.Module:
    """Build the (randomly initialised) open_clip model a checkpoint's config.json describes."""
    name, cfg = info["model_name"], resolved_model_cfg(info)
    if open_clip.get_model_config(name) != cfg:
        register_model_config(name, cfg)
    with quiet_model_building():
        return open_clip.create_model(name, pretrained_text=False, output_dict=True)


@contextlib.contextmanager
def quiet_model_building() -> Iterator[None]:
    """Silence open_clip's 'initialized randomly' and transformers' load reports."""
    # Both are expected here (weights come from our checkpoint or are trained).
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    hf_verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.disable(previous)
        transformers.logging.set_verbosity(hf_verbosity)
        transformers.logging.enable_progress_bar()
