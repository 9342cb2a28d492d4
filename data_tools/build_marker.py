"""Telling a finished shard build from one that was killed part-way.

`clipline data build` drops `.build-incomplete` into its output dir before the
first tar and removes it after dataset.json is written, so a build killed at
any point (even by SIGKILL, which leaves whole tars, a `*.tar.tmp` and no
dataset.json) is recognised: `validate` and `inspect` say "incomplete build"
and exit 1 instead of calling the tars that happen to be whole a dataset.
Shards made elsewhere (img2dataset, by hand) carry no marker and are read as
they are.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from data_tools.atomic_write import write_json_atomic

BUILD_MARKER = ".build-incomplete"


def mark_build_started(out: Path) -> None:
    write_json_atomic(out / BUILD_MARKER, {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def mark_build_finished(out: Path) -> None:
    (out / BUILD_MARKER).unlink(missing_ok=True)


def incomplete_build(directory: str | Path) -> str | None:
    """Why `directory` is an unfinished `clipline data build`, or None if nothing says so."""
    directory = Path(directory)
    marker = directory / BUILD_MARKER
    leftovers = sorted(p.name for p in directory.glob("*.tar.tmp"))
    if not marker.exists() and not leftovers:
        return None
    try:
        started = json.loads(marker.read_text()).get("started", "?") if marker.exists() else None
    except (OSError, ValueError):
        started = None
    when = f" started {started}" if started else ""
    found = f" ({leftovers[0]} is half-written)" if leftovers else ""
    return (f"incomplete build: a `clipline data build`{when} into {directory} did not finish{found}; "
            "rebuild it with `clipline data build ... --out DIR --overwrite`")
