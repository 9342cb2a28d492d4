"""What a benchmark ran on: CPU model and the flags that matter for speed, core count, versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata

FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def machine_info(packages: tuple[str, ...] = ("torch", "open_clip_torch", "webdataset")) -> dict:
    """CPU model, speed-relevant CPU flags, cores, Python and package versions (JSON-ready)."""
    flags, model = set(), ""
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": model, "cpu_count": os.cpu_count(), "cpu_flags": [f for f in FLAGS_THAT_MATTER if f in flags],
            "python": platform.python_version(), "versions": versions}
