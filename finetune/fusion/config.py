"""Settings of a fusion run (the `clipline finetune fusion` flags are generated from these)."""

from __future__ import annotations

from dataclasses import dataclass

from finetune.errors import FinetuneError
from finetune.fusion.data import ValBy
from finetune.fusion.heads import FusionKind, HeadConfig
from finetune.fusion.multitask import Weighting
from finetune.fusion.towers import TowerMode


@dataclass(kw_only=True)
class FusionConfig:
    """How to build and train a fusion classifier."""

    fusion: FusionKind = "gated"
    """concat (+MLP), attention (image patch tokens attend to text tokens), gated (learned per-dimension
    gate between modalities), or a single-modality baseline: image, text."""
    tasks: str = "category"
    """Comma-separated label fields to predict together, e.g. category,subcategory (`label` = the .json label);
    each is read at the top level of a sample's .json, else under its `labels`."""
    label_field: str | None = None
    """One label field to predict, named as the other commands name it (the same as --tasks NAME; wins over it)."""
    towers: TowerMode = "frozen"
    """frozen (tower outputs computed once and cached), last (train the last --unfrozen-blocks blocks of
    each tower plus its final norm and projection), or full."""
    unfrozen_blocks: int = 2
    """Blocks per tower trained with --towers last."""
    task_weighting: Weighting = "fixed"
    """fixed (--task-weights, default 1 each) or uncertainty (learned, Kendall et al. 2018)."""
    task_weights: list[float] | None = None
    """Fixed loss weight per task, in --tasks order."""
    modality_dropout: float = 0.3
    """Probability that a training sample loses one modality (image or text, equally likely), so the
    head learns to classify from either alone."""
    hidden: int = 256
    """Width of the fused vector."""
    attention_heads: int = 4
    """Heads of the cross-attention layer (attention fusion)."""
    dropout: float = 0.1
    """Dropout inside the fusion and task heads."""
    epochs: int = 30
    """Passes over the training data."""
    batch_size: int = 64
    """Samples per step."""
    lr: float = 1e-3
    """AdamW learning rate of the heads (cosine decay over the epochs)."""
    tower_lr: float = 1e-5
    """Learning rate of tower parameters being trained (--towers last / full)."""
    weight_decay: float = 1e-4
    """AdamW weight decay of the heads and towers."""
    val_fraction: float = 0.1
    """Share of the training samples (chosen by key) held out for the validation curve and for
    picking the best epoch; 0 keeps the last epoch."""
    val_by: ValBy = "key"
    """What decides a sample's side of that split: its key, or its caption (keeps samples that share a
    caption together, e.g. an emoji concept drawn by two vendors, so validation sees unseen concepts)."""
    max_train_samples: int | None = None
    """Use at most this many training samples (quick runs)."""
    max_eval_samples: int | None = None
    """Evaluate on at most this many samples."""
    num_workers: int = 0
    """Loader worker processes (0 reads in the main process)."""
    seed: int = 0
    """Seed for initialisation, shuffling and modality dropout."""

    def head_config(self) -> HeadConfig:
        return HeadConfig(fusion=self.fusion, hidden=self.hidden, attention_heads=self.attention_heads,
                          dropout=self.dropout)

    def validate(self) -> None:
        """FinetuneError for settings that cannot work, before any data is read."""
        checks = [
            (0.0 <= self.modality_dropout <= 1.0, f"modality_dropout must be in [0, 1], got {self.modality_dropout}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1"),
            (self.hidden % self.attention_heads == 0,
             f"hidden ({self.hidden}) must be a multiple of attention_heads ({self.attention_heads})"),
            (self.unfrozen_blocks >= 0, f"unfrozen_blocks must be >= 0, got {self.unfrozen_blocks}"),
        ]
        for ok, message in checks:
            if not ok:
                raise FinetuneError(message)
