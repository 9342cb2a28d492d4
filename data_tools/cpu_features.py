"""The CPU's feature flags, for the packages that choose a code path by them (bf16 autocast, the AMX index scan)."""

from __future__ import annotations

from pathlib import Path


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
