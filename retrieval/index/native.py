"""Compile a C source of this package for this CPU, once, into the user's cache, and load it.

The library is named by a hash of the source, the compiler's version, the flags
and the CPU (`-march=native` code may not run on another CPU), so a copied home
dir, an upgraded gcc or an edited source each get their own build. It is
written under a temporary name and renamed, so a failed or concurrent compile
never leaves a half-written library where a later process would load it.

Cache: $CLIPLINE_KERNEL_CACHE, else $XDG_CACHE_HOME/clipline/kernels, else
~/.cache/clipline/kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from data_tools.cpu_features import cpu_flags


class CompileError(RuntimeError):
    """The compiler is missing or failed; the message says which, in one line."""


def kernel_cache_dir() -> Path:
    if os.environ.get("CLIPLINE_KERNEL_CACHE"):
        return Path(os.environ["CLIPLINE_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipline" / "kernels"


@cache
def load_library(source: Path, flags: tuple[str, ...]) -> ctypes.CDLL:
    """`source` compiled with gcc and `flags` (cached as described above), loaded; CompileError if it cannot be."""
    compiler = shutil.which("gcc")
    if compiler is None:
        raise CompileError("gcc is not installed (apt install gcc)")
    version = subprocess.run([compiler, "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    cpu = platform.machine() + " " + " ".join(sorted(cpu_flags()))
    key = hashlib.sha256("\0".join([source.read_text(), version, *flags, cpu]).encode()).hexdigest()[:16]
    library = kernel_cache_dir() / f"{source.stem}-{key}.so"
    if not library.is_file():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent, prefix=".build-") as tmp:
            built = Path(tmp) / library.name
            done = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", str(built), str(source)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                first_error = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr[:200])
                raise CompileError(f"gcc {version} cannot compile {source.name}: {first_error.strip()}")
            os.replace(built, library)
    return ctypes.CDLL(str(library))
