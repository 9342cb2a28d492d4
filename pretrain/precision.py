"""Choose the compute precision: bf16 autocast where the hardware runs it fast, else fp32.

On CPU, bf16 matmuls are only fast with native bf16 instructions (AVX512-BF16
or AMX); without them oneDNN emulates bf16 and autocast is slower than fp32.
fp16 autocast is never used on CPU (no fast kernels, and it needs loss scaling).
Weights, optimizer state and the loss stay fp32; only the towers' matmuls run
in bf16 (autocast), which is what open_clip_train's `amp_bf16` does too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch

from data_tools.cpu_features import cpu_flags
from pretrain.errors import PretrainError

LOG = logging.getLogger(__name__)
Precision = Literal["bf16", "fp32"]
FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_fast_bf16() -> bool:
    return any(flag in cpu_flags() for flag in FAST_BF16_CPU_FLAGS)


def choose_precision(requested: str, device: torch.device) -> tuple[Precision, str]:
    """The precision to use and why (for the log)."""
    if requested == "fp32":
        return "fp32", "requested"
    if requested == "bf16":
        if device.type == "cpu" and not cpu_has_fast_bf16():
            LOG.warning("bf16 requested on a CPU without avx512_bf16/amx_bf16: it will be emulated and slow")
        return "bf16", "requested"
    if requested != "auto":
        raise PretrainError(f"precision must be auto, bf16 or fp32, not {requested!r}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "GPU supports bf16"
        return "fp32", "GPU without bf16 (fp16 autocast is not used)"
    if device.type == "cpu":
        if cpu_has_fast_bf16():
            return "bf16", f"CPU has {'/'.join(f for f in FAST_BF16_CPU_FLAGS if f in cpu_flags())}"
        return "fp32", "CPU without native bf16 (autocast would be emulated)"
    return "fp32", f"no bf16 policy for device type {device.type}"


def autocast(precision: Precision, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A factory of autocast contexts for the forward passes."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def encoder_device(encoder: Any) -> torch.device:
    """The encoder's device (CPU for encoders that do not say, e.g. test doubles)."""
    return torch.device(getattr(encoder, "device", "cpu"))


def resolve_precision(encoder: Any, precision: str) -> Precision:
    """"fp32", "bf16", or what "auto" means on the encoder's device (bf16 where it runs natively)."""
    return choose_precision(precision, encoder_device(encoder))[0]


def precision_context(encoder: Any, precision: str) -> Callable[[], AbstractContextManager]:
    """Autocast factory for `precision` on the encoder's device."""
    return autocast(resolve_precision(encoder, precision), encoder_device(encoder))
