"""Human memory sizes ("2GB", "512MiB", "1.5G") to bytes and back."""

from __future__ import annotations

import re

from retrieval.errors import RetrievalError

# Decimal and binary units both mean what they say; a bare "G" is read as GB
# (autofaiss and most users write "4G" meaning 4e9).
_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}


def parse_size(text: str | int) -> int:
    """Bytes in `text` ("2GB", "512MiB", "1e9", 1000000)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise RetrievalError(f"cannot read memory size {text!r}; write it like 2GB, 512MB or 1.5GiB")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise RetrievalError(f"memory size {text!r} must be positive")
    return value


def format_size(num_bytes: float) -> str:
    """Short decimal form: 2.05GB, 512.0MB, 740B."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(num_bytes) >= scale:
            return f"{num_bytes / scale:.2f}{unit}"
    return f"{int(num_bytes)}B"
