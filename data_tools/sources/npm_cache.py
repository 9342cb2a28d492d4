"""Fetch npm packages with `npm pack` into a local cache and unpack the files we need."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from data_tools.atomic_write import atomic_directory
from data_tools.errors import DataError


def cache_root() -> Path:
    """`$CLIPLINE_CACHE` if set, else `~/.cache/clipline`; npm packages live in its `npm/`."""
    return Path(os.environ.get("CLIPLINE_CACHE") or Path.home() / ".cache" / "clipline")


def npm_pack(package: str, version: str, cache_dir: Path) -> Path:
    """Path of `package-version.tgz` in `cache_dir`, running `npm pack` only if it is absent."""
    tarball = cache_dir / f"{package}-{version}.tgz"
    if tarball.is_file():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"npm is not installed, and the emoji source needs it to fetch {package}@{version}; "
                        "install Node.js/npm (e.g. `apt-get install npm`) and retry")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        result = subprocess.run([npm, "pack", f"{package}@{version}", "--silent", "--pack-destination", tmp],
                                capture_output=True, text=True, check=False)
        packed = Path(tmp) / tarball.name
        if result.returncode != 0 or not packed.is_file():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"`npm pack {package}@{version}` failed ({last}); check network access to the npm registry")
        os.replace(packed, tarball)
    return tarball


def unpack_selected(tarball: Path, keep: Callable[[str], bool]) -> Path:
    """Unpack the members `keep` accepts into `tarball` minus `.tgz`, once; returns that dir.

    Unpacks into a temp dir and renames it, so an interrupted unpack is redone next time.
    """
    target = tarball.with_suffix("")
    if target.is_dir():
        return target
    try:
        with atomic_directory(target) as tmp, tarfile.open(tarball, "r:gz") as archive:
            members = [m for m in archive.getmembers() if m.isreg() and keep(m.name)]
            archive.extractall(tmp, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        tarball.unlink(missing_ok=True)  # a broken download would otherwise stick
        raise DataError(f"{tarball} is corrupt ({exc}); it was removed, run the build again") from exc
    return target
