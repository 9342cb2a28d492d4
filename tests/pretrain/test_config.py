"""Named configs, key=value overrides and their errors."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from open_clip.transform import PreprocessCfg
from PIL import Image

from pretrain.config import apply_overrides, config_from_dict, save_config, validate
from pretrain.data_stream import train_transform
from pretrain.named_configs import NAMED_CONFIGS, named_config
from pretrain.errors import PretrainError


@pytest.mark.parametrize("name", list(NAMED_CONFIGS))
def test_named_configs_build_and_round_trip(name: str) -> None:
    config = named_config(name)
    assert config.name == name
    assert config_from_dict(json.loads(json.dumps(asdict(config)))) == config


def test_overrides_by_dotted_path_and_unique_leaf() -> None:
    config = apply_overrides(named_config("tiny"), ["optim.lr=3e-4", "batch_size=64", "lock_text=true",
                                                    "time_budget_min=2.5", "kind=siglip", "resume=null"])
    assert config.optim.lr == 3e-4 and config.data.batch_size == 64 and config.model.lock_text is True
    assert config.time_budget_min == 2.5 and config.loss.kind == "siglip" and config.resume is None
    assert named_config("tiny").optim.lr == 1e-3  # the named config itself is untouched


@pytest.mark.parametrize("bad, message", [
    ("learning_rate=1", r"unknown config key 'learning_rate'; valid keys: .*optim\.lr"),  # lists the valid keys
    ("batch_size=many", "data.batch_size"), ("kind=triplet", "loss.kind"), ("steps", "not key=value")])
def test_bad_overrides_name_the_key(bad: str, message: str) -> None:
    with pytest.raises(PretrainError, match=message):
        apply_overrides(named_config("tiny"), [bad])


def test_unknown_named_config() -> None:
    with pytest.raises(PretrainError, match="tiny-debug"):
        named_config("huge")


def test_resolved_config_is_saved(tmp_path: Path) -> None:
    config = apply_overrides(named_config("tiny-debug"), ["seed=7"])
    save_config(config, tmp_path)
    assert config_from_dict(json.loads((tmp_path / "config.json").read_text())).seed == 7


def test_random_background_puts_transparent_drawings_on_drawn_backgrounds() -> None:
    config = apply_overrides(named_config("tiny-debug"), ["data.background=random", "data.zoom_out_min=0.7"])
    preprocess = asdict(PreprocessCfg(size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
    drawing = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    per_image = train_transform(apply_overrides(config, ["data.batch_augment=false"]).data, preprocess)
    assert per_image.per_batch is None  # open_clip's per-image transform behind RandomBackground
    torch.manual_seed(0)
    corners = {tuple(per_image.per_image(drawing)[:, 0, 0].tolist()) for _ in range(12)}
    assert len(corners) > 3  # white, black and drawn colours, where a white-only transform gives one
    batched = train_transform(config.data, preprocess)  # the default: the same draws on whole batches
    batch = batched.per_batch(torch.stack([batched.per_image(drawing)] * 12))  # (12, 3, 16, 16)
    assert len({tuple(c.tolist()) for c in batch[:, :, 0, 0]}) > 3
    jitter = train_transform(apply_overrides(config, ["data.color_jitter=0.3"]).data, preprocess)
    assert jitter.per_batch is None  # colour jitter only exists on the per-image path
    with pytest.raises(PretrainError, match="zoom_out_min"):
        validate(apply_overrides(named_config("tiny-debug"), ["data.zoom_out_min=0"]))


@pytest.mark.parametrize("other", ["compile=true", "model.channels_last=true"])
def test_fsdp_refuses_what_it_cannot_shard(other: str) -> None:
    config = apply_overrides(named_config("tiny-debug"), ["distributed.fsdp=true", other])
    assert config.distributed.fsdp is True
    with pytest.raises(PretrainError, match=f"distributed.fsdp=true does not combine with .*{other.split('=')[0]}"):
        validate(config)
    validate(apply_overrides(named_config("tiny-debug"), ["fsdp=true"]))  # alone it is fine
