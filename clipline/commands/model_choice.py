"""Which model a command uses: `--checkpoint RUN`, or an open_clip model `--model NAME [--pretrained FILE]`.

One spelling for every command. The older `--checkpoint open_clip:MODEL[:WEIGHTS]`
still works for one release, with a one-line notice. The evaluation commands
(zeroshot, eval retrieval) share `EvalRunConfig`; those that run a clipline
checkpoint only (explain, compress) share `CheckpointPathsConfig`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

from evaluate.shard_encoding import EncodingConfig
from pretrain.encoder_choice import check_choice
from pretrain.errors import PretrainError
from retrieval.encoder_spec import OPEN_CLIP_PREFIX


@dataclass(kw_only=True)
class ModelChoiceConfig:
    """The model: a clipline checkpoint or an open_clip model."""

    checkpoint: str | None = None
    """Run dir (newest checkpoint) or checkpoint dir written by `clipline pretrain`."""
    model: str | None = None
    """open_clip model name, instead of --checkpoint (e.g. ViT-B-32)."""
    pretrained: str | None = None
    """Weights for --model: a file (e.g. open_clip_train's epoch_N.pt) or an open_clip tag; none: random init."""


@dataclass(kw_only=True)
class CheckpointPathsConfig:
    """The checkpoint a command runs, the shards it reads and the directory it writes."""

    checkpoint: str
    """Run dir (newest checkpoint) or checkpoint dir written by `clipline pretrain`."""
    data: str
    """Shard directory the model is run on."""
    out: str
    """Directory the results are written to (see the command's description for what)."""


@dataclass(kw_only=True)
class EvalRunConfig:
    """The model, the shards it is evaluated on, where the report goes, and how the images are encoded."""

    data: str
    """Shard directory to evaluate on (zeroshot: samples need labels, .cls, .json 'label' or 'labels')."""
    out: str
    """Where to write report.json (zeroshot: report.html and the PNGs go next to it)."""
    encoder: ModelChoiceConfig = field(default_factory=ModelChoiceConfig)
    """The model: --checkpoint RUN, or --model NAME [--pretrained FILE]."""
    encoding: EncodingConfig = field(default_factory=lambda: EncodingConfig(precision="auto"))
    """How the images are encoded: --batch-size, --max-samples, --num-workers, --precision."""
    allow_resize: bool = False
    """Accept shards whose image size differs from the model's (the eval transform rescales them)."""


EVAL_FLAT = ("run", "run.encoder", "run.encoding")  # the EvalRunConfig group's flags have no prefix


def normalised(choice: ModelChoiceConfig) -> ModelChoiceConfig:
    """`--checkpoint open_clip:M[:W]` rewritten as `--model M --pretrained W`, with the notice."""
    if choice.checkpoint is None or not choice.checkpoint.startswith(OPEN_CLIP_PREFIX):
        return choice
    if choice.model is not None or choice.pretrained is not None:
        raise PretrainError("pass exactly one of `checkpoint` RUN or `model` NAME [`pretrained` FILE]")
    name, _, weights = choice.checkpoint[len(OPEN_CLIP_PREFIX):].partition(":")
    spelled = f"--model {name}" + (f" --pretrained {weights}" if weights else "")
    print(f"note: --checkpoint {choice.checkpoint} is deprecated and will be removed; write {spelled}",
          file=sys.stderr)
    return replace(choice, checkpoint=None, model=name, pretrained=weights or None)


def encoder_spec(choice: ModelChoiceConfig, *, required: bool = True) -> str | None:
    """The encoder as the retrieval library names it: RUN, or open_clip:MODEL[:WEIGHTS]."""
    choice = normalised(choice)
    check_choice(choice.checkpoint, choice.model, choice.pretrained, required=required)
    if choice.model is not None:
        return OPEN_CLIP_PREFIX + choice.model + (f":{choice.pretrained}" if choice.pretrained else "")
    return choice.checkpoint


def report_provenance(choice: ModelChoiceConfig, encoder: object) -> dict:
    """What an evaluation report records about the model it scored (same keys for every command)."""
    return {"checkpoint": choice.checkpoint, "model": choice.model or encoder.config.get("model_name"),
            "pretrained": choice.pretrained, "checkpoint_id": encoder.checkpoint_id}
