"""Atomic file writes: write to a temporary name in the same directory, then os.replace.

A reader (or a crash) never sees half a report or half an adapter.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(temp_path), then move the temp file onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """JSON-encode `payload` (indent 2) to `path` atomically."""
    text = json.dumps(payload, indent=2, default=str)
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))
