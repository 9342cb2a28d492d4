"""Paths an embedding or index dir records in its info.json: relative to that dir, so a moved tree still loads.

    record_path(path, base)         -> "../data/emoji-val"   (what info.json holds)
    recorded_path(value, base)      -> the path on this machine, read from `base`
    record_checkpoint / recorded_checkpoint: the same for a `--checkpoint` value
                                     (an `open_clip:MODEL[:WEIGHTS]` spec is kept as it is)
    rebased(info, old_base, new_base) -> info with its paths re-recorded for another dir

Both sides work on real paths (symlinks resolved) so that `..` means what the
filesystem means by it. Absolute values written by older versions still read.
"""

from __future__ import annotations

import os
from pathlib import Path

from retrieval.encoder_spec import OPEN_CLIP_PREFIX


def record_path(path: str | Path, base: str | Path) -> str:
    """`path` relative to the directory `base` (which need not exist yet)."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(base))


def recorded_path(value: str | None, base: str | Path) -> str | None:
    """The real path a value recorded in `base`'s info.json names; None if nothing was recorded."""
    if not value:
        return None
    return os.path.realpath(os.path.join(base, value))  # an absolute value stays itself


def record_checkpoint(spec: str, base: str | Path) -> str:
    """A `--checkpoint` value as `base`'s info.json records it: a path relative to `base`, else as given."""
    if spec.startswith(OPEN_CLIP_PREFIX) or not Path(spec).exists():
        return spec
    return record_path(spec, base)


def recorded_checkpoint(value: str | None, base: str | Path) -> str | None:
    """The `--checkpoint` value a recorded one stands for on this machine."""
    if not value or value.startswith(OPEN_CLIP_PREFIX):
        return value
    return recorded_path(value, base)


def rebased(info: dict, old_base: str | Path, new_base: str | Path) -> dict:
    """`info` (read from `old_base`) with its recorded paths re-recorded for an info.json in `new_base`."""
    out = dict(info)
    for key in ("data_dir", "emb_dir"):
        if info.get(key):
            out[key] = record_path(recorded_path(info[key], old_base), new_base)
    if info.get("checkpoint"):
        out["checkpoint"] = record_checkpoint(recorded_checkpoint(info["checkpoint"], old_base), new_base)
    return out
