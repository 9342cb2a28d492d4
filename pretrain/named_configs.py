"""Named run configs: functions returning a `TrainConfig` (big_vision style), each with a fast variant.

`clipline pretrain --config NAME` starts from one of these; `DEFAULT_CONFIG`
is the recipe chosen by measurement (README "Default recipe").
"""

from __future__ import annotations

from collections.abc import Callable

from pretrain.config import DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig
from pretrain.errors import PretrainError

# Emoji-sized runs are timed, not counted: the schedule ends with the budget
# on any machine, and recipes compare as quality per CPU minute.
EMOJI_BUDGET_MIN = 10.0
STEP_CAP = 1_000_000
EMOJI_EVAL_EVERY = 100  # steps; with --val-data, ~every 2 minutes on 2 cores (eval time is not budget time)


def _timed_emoji_run(name: str, model: ModelConfig, *, lr: float = 1e-3, group_positives: bool = False,
                     data: DataConfig | None = None) -> TrainConfig:
    """Batch 128, 100 warm-up steps, the schedule set by EMOJI_BUDGET_MIN; with `group_positives`
    every drawing of a concept is a positive (multi-positive InfoNCE)."""
    return TrainConfig(name=name, model=model, data=data or DataConfig(batch_size=128),
                       loss=LossConfig(positives="group") if group_positives else LossConfig(),
                       optim=OptimConfig(lr=lr, warmup_steps=100),
                       steps=STEP_CAP, time_budget_min=EMOJI_BUDGET_MIN, eval_every=EMOJI_EVAL_EVERY)


def tiny() -> TrainConfig:
    """clip-tiny-64 from scratch: the small CPU baseline."""
    return _timed_emoji_run("tiny", ModelConfig(name="clip-tiny-64"))


def tiny_debug() -> TrainConfig:
    """A few steps of clip-tiny-64 at batch 8: for tests and smoke runs."""
    return TrainConfig(name="tiny-debug", model=ModelConfig(name="clip-tiny-64"),
                       data=DataConfig(batch_size=8, workers=0, shuffle_buffer=16),
                       optim=OptimConfig(lr=1e-3, warmup_steps=2), steps=6, precision="fp32",
                       log_every=1, checkpoint_every=3, keep_checkpoints=0, progress=False)


def emoji_small() -> TrainConfig:
    """clip-small-64 (~32M params) from scratch on emoji."""
    return _timed_emoji_run("emoji-small", ModelConfig(name="clip-small-64"), lr=5e-4)


def emoji_lit_minilm() -> TrainConfig:
    """Tiny ViT from scratch against the locked pretrained MiniLM text tower (LiT), every drawing of a
    concept a positive (multi-positive InfoNCE)."""
    return _timed_emoji_run("emoji-lit-minilm", ModelConfig(name="clip-tiny-64-minilm", lock_text=True),
                            group_positives=True)


def emoji_lit_rn() -> TrainConfig:
    """A small convolutional image tower (open_clip's ModifiedResNet, 64 px) from scratch against the locked
    MiniLM (through a trained text projection), every drawing of a concept a positive; the default before
    emoji-lit-rn-raw."""
    return _timed_emoji_run("emoji-lit-rn", ModelConfig(name="clip-rn-64-minilm", lock_text=True),
                            group_positives=True)


def emoji_lit_rn_raw() -> TrainConfig:
    """The default: the small convolutional image tower from scratch, mapped straight into the locked
    MiniLM's own sentence space (no text projection, so the text side keeps MiniLM's sense of words),
    every drawing of a concept a positive, drawings put on random backgrounds (train on shards built with
    `--background keep`). Chosen by the ablation in README "Default recipe"."""
    return _timed_emoji_run("emoji-lit-rn-raw", ModelConfig(name="clip-rn-64-minilm-raw", lock_text=True),
                            group_positives=True, data=DataConfig(batch_size=128, background="random"))


NAMED_CONFIGS: dict[str, Callable[[], TrainConfig]] = {
    "tiny": tiny,
    "tiny-debug": tiny_debug,
    "emoji-small": emoji_small,
    "emoji-lit-minilm": emoji_lit_minilm,
    "emoji-lit-rn": emoji_lit_rn,
    "emoji-lit-rn-raw": emoji_lit_rn_raw,
}
DEFAULT_CONFIG = "emoji-lit-rn-raw"


def named_config(name: str) -> TrainConfig:
    if name not in NAMED_CONFIGS:
        raise PretrainError(f"unknown config {name!r}: choose one of {', '.join(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name]()
