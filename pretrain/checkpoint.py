"""Checkpoint directories: write atomically, find the newest, read back.

A checkpoint is a directory `RUN/checkpoints/step_XXXXXXXX/` holding
- `model.safetensors`: the open_clip model's state dict (loads with
  `open_clip.create_model(name)` + `load_state_dict`, or `pretrained=` that file),
- `config.json`: model name and config, tokenizer, preprocessing,
- `train_state.pt`: optimizer, scheduler, step, RNG states, data position.
It is written under a temporary name in the same folder and renamed, so a
reader never sees half a checkpoint, even after SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data_tools.atomic_write import atomic_directory, remove_stale_temporaries
from pretrain.errors import PretrainError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.pt"
CHECKPOINTS_DIR = "checkpoints"
STEP_PREFIX = "step_"
FORMAT = "clipline-checkpoint/1"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where `save_checkpoint` puts the checkpoint of `step` (the same on every process)."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"{STEP_PREFIX}{step:08d}"


def save_checkpoint(run_dir: str | Path, *, step: int, state_dict: dict[str, torch.Tensor],
                    model_info: dict[str, Any], train_state: dict[str, Any] | None = None,
                    keep_last: int = 0) -> Path:
    """Write `run_dir/checkpoints/step_<step>/` atomically and return its path.

    `keep_last` > 0 deletes older step directories beyond that many. Text towers
    from packages are recorded by package name, so the checkpoint loads on any machine.
    """
    from pretrain.models.build import portable_model_info  # deferred: open_clip takes seconds to import

    final = checkpoint_path(run_dir, step)
    remove_stale_temporaries(final.parent)  # half-written step dirs of a killed run (never a live writer's)
    # Re-saving a step (e.g. a signal right after a periodic save) replaces it whole.
    with atomic_directory(final) as tmp:
        # safetensors refuses shared storage; clones make every tensor its own.
        tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        info = {"format": FORMAT, "step": step, **portable_model_info(model_info)}
        (tmp / CONFIG_FILE).write_text(json.dumps(info, indent=2))
        if train_state is not None:
            torch.save(_own_copies(train_state), tmp / TRAIN_STATE_FILE)
    if keep_last > 0:
        for stale in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _own_copies(obj: Any) -> Any:
    """`obj` with every tensor cloned to CPU, so no two saved tensors share memory.

    torch.save refuses two storages at one address with different dtypes; a
    CI run once hit that on the optimizer state (not reproduced in 40 local
    runs). Fresh copies cannot alias; the optimizer state is small next to
    the step itself.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: _own_copies(value) for key, value in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple takes its fields positionally
        return type(obj)(*(_own_copies(value) for value in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_own_copies(value) for value in obj)
    return obj


def is_checkpoint_dir(path: Path) -> bool:
    return (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file()


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint dirs of a run, oldest first (temporary dirs ignored)."""
    dirs = [p for p in (Path(run_dir) / CHECKPOINTS_DIR).glob(f"{STEP_PREFIX}*") if is_checkpoint_dir(p)]
    return sorted(dirs, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def find_latest(path: str | Path) -> Path | None:
    """The checkpoint dir `path` names: itself if it is one, else a run's newest; None if none."""
    path = Path(path)
    if is_checkpoint_dir(path):
        return path
    found = list_checkpoints(path)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """Like `find_latest`, but a missing checkpoint is a PretrainError saying what to pass."""
    path = Path(path)
    if not path.exists():
        raise PretrainError(f"checkpoint path {path} does not exist: pass a run dir or a checkpoint dir")
    if path.name.startswith(".") and ".tmp-" in path.name:
        raise PretrainError(f"{path} is an unfinished checkpoint (its save was interrupted): pass the run dir "
                            "or a complete step_* checkpoint")
    found = find_latest(path)
    if found is None:
        raise PretrainError(
            f"no checkpoint in {path}: expected {WEIGHTS_FILE} and {CONFIG_FILE} there or "
            f"under {path / CHECKPOINTS_DIR}/{STEP_PREFIX}*/ (train first, or pass a finished run)"
        )
    return found


MODEL_INFO_KEYS = ("model_name", "model_cfg", "tokenizer", "preprocess")


def read_model_info(ckpt_dir: str | Path) -> dict[str, Any]:
    """A checkpoint's config.json; PretrainError when it is unreadable or lacks a key a model needs."""
    path = Path(ckpt_dir) / CONFIG_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PretrainError(f"{path} is not readable JSON ({err}): the checkpoint is damaged; "
                            "point at another checkpoint of the run or retrain") from err
    missing = [key for key in MODEL_INFO_KEYS if key not in info] if isinstance(info, dict) else list(MODEL_INFO_KEYS)
    if missing:
        raise PretrainError(f"{path} lacks {', '.join(missing)}: the checkpoint is damaged or not a clipline "
                            "checkpoint; point at another checkpoint of the run or retrain")
    return info


def read_weights(ckpt_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(ckpt_dir) / WEIGHTS_FILE
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise PretrainError(f"{path} cannot be read ({err}): the checkpoint is truncated or damaged; "
                            "point at another checkpoint of the run or retrain") from err


def read_train_state(ckpt_dir: str | Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / TRAIN_STATE_FILE
    if not path.is_file():
        raise PretrainError(f"{path} is missing: this checkpoint holds weights only and cannot resume training")
    try:  # the state holds numpy/python RNG states and plain dicts, not just tensors
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        reason = str(err).split(". ")[0][:160]
        raise PretrainError(f"{path} cannot be read ({reason}): the train state is truncated "
                            "or damaged; resume from an earlier checkpoint (`resume` CKPT_DIR) or start fresh") from err
    if not isinstance(state, dict):
        raise PretrainError(f"{path} holds no train state; resume from an earlier checkpoint or start fresh")
    return state


def open_clip_config(path: str | Path) -> dict[str, Any]:
    """The open_clip model config of a checkpoint (run dir or checkpoint dir), loadable on this machine.

    Its text-tower folders are this machine's (packages resolved), so it can be
    written as NAME.json into a folder for `open_clip.add_model_config`;
    `open_clip.create_model_and_transforms(NAME, pretrained=CKPT/model.safetensors)` then builds the model.
    """
    from pretrain.models.build import resolved_model_cfg

    return resolved_model_cfg(read_model_info(resolve_checkpoint(path)))


def file_digest(path: Path) -> str:
    """A short hash naming a file's bytes (sha256); of a checkpoint's model.safetensors, it names the weights."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]


def state_dict_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A short hash of in-memory weights (for models that have no file yet)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(key.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]
