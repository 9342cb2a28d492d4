"""Output paths checked before anything is written: a file where a file goes, a directory where a directory goes.

A command calls these on its output flags first, so a wrong path fails in one
line before any slow work and leaves nothing behind:

    check_output_file("report.json", create=False)   # not a directory; no file where a parent dir must be
    check_output_dir("runs/x", create=False)         # not a file (create=True also makes it)
"""

from __future__ import annotations

from pathlib import Path

from data_tools.errors import DataError


def _check_parents(path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"cannot write {path}: {parent} is a file, not a directory; choose another path")
            return


def check_output_file(path: str | Path, *, create: bool = True) -> Path:
    """`path` as a file to (re)write, its directory created unless `create` is False; DataError if it is a
    directory or under a file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, but a file is written there; name a file (e.g. {path}/report.json)")
    _check_parents(path)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def check_output_dir(path: str | Path, *, create: bool = True) -> Path:
    """`path` as a directory to create or fill (created unless `create` is False); DataError if it is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path} is a file, but a directory is written there; choose a directory path")
    _check_parents(path)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
