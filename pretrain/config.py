"""Typed run configs and `key=value` overrides.

A run is described by one `TrainConfig` (keyword-only dataclasses, a docstring
per field). Named configs (`pretrain/named_configs.py`) are functions returning
one (big_vision style), each with a fast variant for tests; the command line overrides any field with
`key=value`, where key is a dotted path (`optim.lr=1e-3`) or a field name that
is unique across groups (`lr=1e-3`). The resolved config is saved in the run dir.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

from data_tools.atomic_write import write_json_atomic
from pretrain.errors import PretrainError


@dataclass(kw_only=True)
class ModelConfig:
    """Which two-tower model to train and which parts of it."""

    name: str = "clip-tiny-64"
    """open_clip config name: ours (clip-tiny-64, clip-small-64, their -minilm twins) or any open_clip name."""
    pretrained: str | None = None
    """open_clip weights to start from: a tag or a file (None = random init; MiniLM towers load their own)."""
    lock_text: bool = False
    """Freeze the text tower (LiT); a MiniLM tower keeps its linear projection trainable."""
    lock_text_unlocked_layers: int = 0
    """With lock_text: number of last text layers left trainable."""
    lock_image: bool = False
    """Freeze the image tower."""
    lock_image_unlocked_groups: int = 0
    """With lock_image: number of last image layer groups left trainable."""
    patch_dropout: float = 0.0
    """FLIP: fraction of image patches dropped in training (0.5 halves image-tower cost)."""
    grad_checkpointing: bool = False
    """Recompute activations in backward: less memory, about 30% more compute."""
    dynamic_padding: bool = True
    """Cut each text batch to its longest caption (exact for causal EOT-pooled and masked towers)."""
    channels_last: bool | None = None
    """Image tower weights and inputs in NHWC order (same maths; ~1.35x faster bf16 convolutions on CPU);
    None = on for convolutional image towers."""
    pooled_last_block: bool = True
    """Compute each tower's last block for its pooled token only (class / end-of-text token): the same
    features, ~15% fewer FLOPs on clip-tiny-64 (open_clip ViTs and causal text towers; others unchanged)."""
    text_buckets: int = 3
    """With dynamic_padding on an open_clip text tower: split each text batch into up to this many
    length buckets, each cut to its own longest caption (same features; a split is taken only where it
    saves more rows than a pass costs). 1 = one trimmed batch. 3 measured fastest on clip-tiny-64."""
    attention: Literal["auto", "fused", "explicit"] = "auto"
    """Attention kernel: fused SDPA, or explicit matmuls (same maths; ~6x faster on CPU for short
    sequences); auto = explicit on CPU when sequences are <= 256 tokens."""


@dataclass(kw_only=True)
class DataConfig:
    """Where the pairs come from and how they are batched."""

    train_data: str | None = None
    """Shard directory to train on (required); several joined by `::` train on all of them
    (`emoji-train::fmnist-train`), a `{00000..00009}.tar` brace pattern takes a range of shards."""
    train_data_weights: tuple[float, ...] | None = None
    """One weight per `::`-separated train_data source (`3,1`): each sample of a source is drawn
    weight times as often as in the plain mix (shards resampled; None = every sample once an epoch)."""
    val_data: str | None = None
    """Shard directory for in-loop evaluation (retrieval R@k; zero-shot if it has classes)."""
    batch_size: int = 128
    """Pairs per process per forward pass."""
    accum_steps: int = 1
    """Forward passes per optimizer step; features are cached so the contrastive batch is
    batch_size * accum_steps * processes (GradCache)."""
    workers: int | None = None
    """Loader worker processes per training process (0 = load in the training process; None = auto:
    0 on machines with <= 2 cores, where a worker only steals a core from the training threads)."""
    shuffle_buffer: int = 2000
    """Samples in the shuffle buffer."""
    caption: Literal["random", "first"] = "random"
    """Which caption variant a sample uses: a random one each epoch, or always the first."""
    augment: bool = True
    """open_clip's training transform (random resized crop, colour jitter, grayscale below) instead of
    the eval transform."""
    crop_scale_min: float = 0.9
    """augment: smallest area share kept by the random resized crop (open_clip's default 0.9)."""
    color_jitter: float = 0.0
    """augment: brightness/contrast/saturation jitter strength, applied to 80% of images (0 = off)."""
    grayscale_prob: float = 0.0
    """augment: share of images turned grayscale."""
    batch_augment: bool = True
    """augment without colour jitter or grayscale: crop, backgrounds and normalisation on whole batches
    (bilinear; the loader's CPU time per batch ~4x smaller) instead of open_clip's per-image transform (bicubic)."""
    background: Literal["white", "random"] = "white"
    """Transparent pixels of drawings stored with transparency (`data build --background keep`): flattened
    onto white, or onto a background drawn per sample (white, black or any colour), so the model does not
    depend on how a reader flattens transparency."""
    zoom_out_min: float = 1.0
    """background=random: shrink a drawing with transparency to a random share >= this of the frame, at a
    random place (1 = off)."""


@dataclass(kw_only=True)
class LossConfig:
    """The contrastive objective."""

    kind: Literal["clip", "siglip"] = "clip"
    """clip: symmetric InfoNCE; siglip: pairwise sigmoid with a learnable bias."""
    positives: Literal["pair", "group"] = "pair"
    """pair: only a sample's own caption is its positive (CLIP); group: every pair of the batch with the
    same concept (the sample json's `concept`, else the same first caption) is a positive too."""
    soft_targets: float = 0.0
    """clip: share of each pair's target spread over the batch's captions by their similarity to its own
    caption in the text tower's space (softmax of cosine / soft_temperature; 0 = hard targets)."""
    soft_temperature: float = 0.1
    """soft_targets: temperature of the caption-similarity softmax (lower = only near-synonyms)."""
    local_loss: bool = False
    """clip across processes: each rank scores only its own rows against all (same gradient, less memory)."""
    max_logit_scale: float = 100.0
    """Upper clamp of exp(temperature parameter)."""
    init_logit_bias: float = -10.0
    """siglip: initial logit bias."""


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW with linear warmup and cosine decay."""

    lr: float = 1e-3
    """Peak learning rate."""
    min_lr: float = 0.0
    """Learning rate at the end of the cosine."""
    weight_decay: float = 0.2
    """Decoupled weight decay on matrices (never on norms, biases, embeddings' positions, temperature)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.98
    """AdamW beta2."""
    eps: float = 1e-6
    """AdamW epsilon."""
    warmup_steps: int = 100
    """Steps of linear warmup from 0 to lr."""
    text_lr_scale: float = 1.0
    """Learning-rate multiplier of a pretrained text tower's trainable layers (model.lock_text_unlocked_layers)."""
    grad_clip_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    fused: bool | None = None
    """Fused AdamW kernel (None = use it where this torch has one for the device)."""


@dataclass(kw_only=True)
class DistillConfig:
    """Distillation from a trained teacher CLIP (off unless `teacher` is set); see pretrain/teacher.py."""

    teacher: str | None = None
    """Teacher run dir (its newest checkpoint) or checkpoint dir; None = no distillation."""
    temperature: float = 1.0
    """T softening both similarity matrices before the KL (the KL is scaled by T^2)."""
    kl_weight: float = 1.0
    """Weight of the KL between teacher and student similarity matrices (added to the contrastive loss)."""
    feature_weight: float = 1.0
    """Weight of feature matching, 1 - cos(student, teacher) per pair (through a learned projection
    when the embedding sizes differ; 0 = similarities only)."""


@dataclass(kw_only=True)
class DistributedConfig:
    """How several processes share the model (one process ignores this)."""

    fsdp: bool = False
    """Shard the trained weights, their gradients and optimizer state over the processes (FSDP) instead of
    keeping a full copy on each (DDP): for towers too big for one device. Same loss and updates as DDP."""


@dataclass(kw_only=True)
class TrainConfig:
    """One pretraining run."""

    name: str = "tiny"
    """Name of the named config this came from (informative)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model choice."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data and batching."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Objective."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Distillation from a teacher (off by default)."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Sharding across processes."""
    steps: int = 1000
    """Optimizer steps (the schedule's length unless time_budget_min is set)."""
    time_budget_min: float | None = None
    """Train for this many wall-clock minutes; the cosine then follows elapsed time (steps is a cap)."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the trained weights (e.g. 0.998 per step; 0 = off):
    in-loop evaluation and checkpoints' model weights use it, train_state keeps the raw weights."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 autocast where the device runs it fast, else fp32 (never fp16 on CPU)."""
    compile: bool = False
    """torch.compile the model."""
    threads: int | None = None
    """torch intra-op threads (None = torch's default)."""
    batch_split: int | None = None
    """CPU, one process: run each step's batch as this many parts on parallel threads, each with its share
    of the intra-op threads; same loss and gradients (pretrain/batch_split.py). None = auto (2 with >= 2
    threads, a ViT image tower and a step that allows it), 1 = off."""
    retain_memory: bool = True
    """CPU: keep freed memory in the process (glibc mallopt) so steps do not page-fault it back."""
    embedding_grad_in_place: bool = True
    """One process: add the token embedding's gradient rows into a kept buffer instead of a new full-table
    tensor each step (same gradient; pretrain/models/embedding_grad.py)."""
    bias_fused_linear: bool = True
    """CPU bf16 autocast: linear layers add their bias inside the matmul (same values;
    pretrain/models/bias_fused_linear.py). Not with compile=true, which fuses on its own."""
    seed: int = 0
    """Seed for init, data order and augmentation."""
    deterministic: bool = False
    """Deterministic kernels; with one process a resumed run repeats an uninterrupted one exactly."""
    log_every: int = 10
    """Steps between metrics.jsonl rows."""
    eval_every: int = 0
    """Steps between in-loop evaluations (0 = only at the end)."""
    checkpoint_every: int = 200
    """Steps between checkpoints (a final one is always written)."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept (0 = keep all)."""
    out: str | None = None
    """Run directory (default runs/<name>)."""
    resume: str | None = None
    """'latest' (newest checkpoint in out), or a checkpoint/run dir to resume from."""
    progress: bool = True
    """Show a progress bar."""

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name


def field_paths(cls: type = TrainConfig, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every leaf field as 'group.name' -> Field."""
    paths: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory):  # a group (MISSING is no dataclass)
            paths.update(field_paths(f.default_factory, f"{prefix}{f.name}."))
        else:
            paths[f"{prefix}{f.name}"] = f
    return paths


def resolve_key(key: str) -> str:
    """Dotted path for `key` (a dotted path or a unique leaf name); PretrainError listing keys if unknown."""
    paths = field_paths()
    if key in paths:
        return key
    matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise PretrainError(f"config key {key!r} is ambiguous: write one of {', '.join(matches)}")
    raise PretrainError(f"unknown config key {key!r}; valid keys: {', '.join(paths)}")


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Return a copy of `config` with `key=value` strings applied (values parsed by field type)."""
    import jsonargparse  # only the command line needs it

    args = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PretrainError(f"override {item!r} is not key=value (e.g. optim.lr=3e-4)")
        args.append(f"--run.{resolve_key(key.strip())}={value}")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(TrainConfig, "run")
    parser.set_defaults({f"run.{path}": attrgetter(path)(config) for path in field_paths()})
    try:
        parsed = parser.parse_args(args)
    except Exception as err:  # jsonargparse raises ArgumentError with the type it expected
        raise PretrainError(f"bad override value: {' '.join(str(err).split())}") from err
    return parser.instantiate_classes(parsed).run


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    groups = {"model": ModelConfig, "data": DataConfig, "loss": LossConfig, "optim": OptimConfig,
              "distill": DistillConfig, "distributed": DistributedConfig}
    kwargs = {k: groups[k](**v) if k in groups else v for k, v in values.items()}
    return TrainConfig(**kwargs)


def validate(config: TrainConfig) -> None:
    """Reject combinations that cannot run, with what to change."""
    if config.data.batch_size < 2:
        raise PretrainError("data.batch_size must be >= 2: a contrastive batch needs negatives")
    if config.batch_split is not None and config.batch_split < 1:
        raise PretrainError("batch_split must be >= 1 (or null for auto)")
    if config.data.accum_steps < 1:
        raise PretrainError("data.accum_steps must be >= 1")
    if config.steps < 1:
        raise PretrainError("steps must be >= 1")
    if not 0.0 < config.data.zoom_out_min <= 1.0:
        raise PretrainError("data.zoom_out_min must be in (0, 1] (1 = no zoom out)")
    if not 0.0 < config.data.crop_scale_min <= 1.0 or config.data.color_jitter < 0 \
            or not 0.0 <= config.data.grayscale_prob <= 1.0:
        raise PretrainError("data.crop_scale_min must be in (0, 1], data.color_jitter >= 0, "
                            "data.grayscale_prob in [0, 1]")
    weights = config.data.train_data_weights
    if weights is not None and (len(weights) != len((config.data.train_data or "").split("::"))
                                or any(w < 0 for w in weights) or not any(w > 0 for w in weights)):
        raise PretrainError(f"data.train_data_weights {','.join(map(str, weights))} must give one weight >= 0 per "
                            "`::`-separated train_data source (not all 0)")
    if config.model.text_buckets < 1:
        raise PretrainError("model.text_buckets must be >= 1 (1 = no length buckets)")
    if not 0.0 <= config.model.patch_dropout < 1.0:
        raise PretrainError("model.patch_dropout must be in [0, 1)")
    if config.time_budget_min is not None and config.time_budget_min <= 0:
        raise PretrainError("time_budget_min must be > 0 (or null for a step-based schedule)")
    if not 0.0 <= config.ema_decay < 1.0:
        raise PretrainError("ema_decay must be in [0, 1) (0 = no weight average)")
    if not 0.0 <= config.loss.soft_targets < 1.0 or config.loss.soft_temperature <= 0:
        raise PretrainError("loss.soft_targets must be in [0, 1) and loss.soft_temperature > 0")
    if config.loss.soft_targets and config.loss.kind != "clip":
        raise PretrainError("loss.soft_targets needs loss.kind=clip (SigLIP has no softmax target)")
    if config.distill.temperature <= 0:
        raise PretrainError("distill.temperature must be > 0")
    if config.distill.kl_weight < 0 or config.distill.feature_weight < 0:
        raise PretrainError("distill.kl_weight and distill.feature_weight must be >= 0")
    if config.distributed.fsdp and (config.compile or config.model.channels_last):
        raise PretrainError("distributed.fsdp=true does not combine with compile=true or model.channels_last=true "
                            "(FSDP shards neither compiled blocks nor channels-last weights): drop one of them")


def save_config(config: TrainConfig, run_dir: Path) -> Path:
    """Write the resolved config to run_dir/config.json (atomically)."""
    return write_json_atomic(run_dir / "config.json", dataclasses.asdict(config))  # creates run_dir if missing
