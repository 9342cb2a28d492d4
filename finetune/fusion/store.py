"""Saving and loading a trained fusion classifier (a run directory's `fusion/`).

`fusion.safetensors` holds the heads and, when the towers were trained, the
towers too; frozen towers are not copied, they are re-read from the source
checkpoint named in `fusion.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from data_tools.atomic_write import atomic_path, write_json_atomic
from finetune.errors import FinetuneError
from finetune.fusion.heads import HeadConfig
from finetune.fusion.model import FusionClassifier
from finetune.fusion.multitask import TaskLossWeighting
from pretrain.encoder import Encoder
from pretrain.errors import PretrainError

WEIGHTS = "fusion.safetensors"
META = "fusion.json"


def save_fusion(out: Path, model: FusionClassifier, weighting: TaskLossWeighting, *, checkpoint: str,
                towers_trained: bool) -> None:
    """Write weights then metadata, each atomically; metadata last so a reader never sees half a run."""
    out.mkdir(parents=True, exist_ok=True)
    state = {n: v.detach().contiguous() for n, v in model.state_dict().items()
             if towers_trained or not n.startswith("towers.")}
    state |= {f"weighting.{n}": v.detach().contiguous() for n, v in weighting.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    write_json_atomic(out / META, {
        "checkpoint": str(checkpoint),
        "head": vars(model.head_config),
        "classes": model.classes,
        "towers_trained": towers_trained,
        "task_weighting": weighting.weighting,
    })


def load_fusion(run: str | Path, device: str = "cpu") -> tuple[FusionClassifier, Encoder]:
    """The classifier a fusion run saved (eval mode) and the Encoder of its source checkpoint.

    The towers come from the run when they were trained, else from the source
    checkpoint; the Encoder supplies preprocessing and the tokenizer.
    """
    run = Path(run)
    if not (run / META).is_file() or not (run / WEIGHTS).is_file():
        raise FinetuneError(f"{run} is not a fusion run (no {META} / {WEIGHTS}); train one with "
                            "`clipline finetune fusion ... --out RUN`")
    meta = json.loads((run / META).read_text(encoding="utf-8"))
    try:
        encoder = Encoder.load(meta["checkpoint"], device=device)
    except PretrainError as exc:
        raise FinetuneError(f"fusion run {run}: its source checkpoint cannot be loaded: {exc}") from exc
    model = FusionClassifier(encoder.model, HeadConfig(**meta["head"]), meta["classes"])
    state = {n: v for n, v in load_file(str(run / WEIGHTS)).items() if not n.startswith("weighting.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [n for n in missing if not n.startswith("towers.")]
    if missing or unexpected:
        raise FinetuneError(f"{run / WEIGHTS} does not match its {META} (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}): the run is damaged, retrain it")
    return model.eval(), encoder
