"""What a benchmark ran on (CPU model and the flags that matter for speed, core count, versions) and the CPU time it
used."""

from __future__ import annotations

import os
import platform
import resource
from importlib import metadata

FLAGS_THAT_MATTER = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16",
                     "amx_int8")


def machine_info(packages: tuple[str, ...] = ("torch", "open_clip_torch", "webdataset"), *,
                 threads: int | None = None) -> dict:
    """CPU model, speed-relevant CPU flags, cores, Python and package versions (JSON-ready); `threads`: the
    compute threads the benchmark ran with (torch's or faiss's), when it says."""
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
    info = {"cpu": model, "cpu_count": os.cpu_count(), "cpu_flags": [f for f in FLAGS_THAT_MATTER if f in flags],
            "python": platform.python_version(), "versions": versions}
    return info if threads is None else {**info, "threads": threads}


def cpu_seconds() -> float:
    """CPU time of this process's threads plus its finished child processes (loader or pool workers, a peer's
    process tree): rates per CPU second do not move with other jobs' load on a shared machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
