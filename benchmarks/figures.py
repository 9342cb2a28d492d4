"""How a benchmark hands back its figures: one JSON object, printed and optionally written to a file, timed
passes run in fresh processes that print theirs as the last line, and the wall-clock time of one call."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def print_figures(figures: dict[str, Any], out: str | None = None, *, indent: int | None = 2) -> None:
    """Print `figures` as JSON (one line if `indent` is None; unencodable values as their `str`), also to `out`."""
    text = json.dumps(figures, indent=indent, default=str)
    if out:
        Path(out).write_text(text + "\n")
    print(text)


def run_fresh_pass(script: str, payload: Any, what: str) -> Any:
    """Run `python SCRIPT child PAYLOAD-JSON` in a new process (a cold start, with memory of its own) and
    return the JSON value on the last line it prints; RuntimeError with its stderr's end if it fails."""
    proc = subprocess.run([sys.executable, script, "child", json.dumps(payload)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pass {what} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """`fn(*args, **kwargs)` and the wall-clock seconds it took."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
