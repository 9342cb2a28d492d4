"""How a benchmark hands back its figures: one JSON object, printed and optionally written to a file, and
timed passes run in fresh processes that print theirs as the last line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def print_figures(figures: dict[str, Any], out: str | None, *, indent: int = 2) -> None:
    """Print `figures` as JSON (values JSON cannot encode as their `str`) and write the same text to `out`."""
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
