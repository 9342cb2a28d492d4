"""The server's query encoder, set up once at load for the precision its queries run in.

Under bf16 autocast every Linear layer casts its float32 weight to bf16 on
every forward: for the MiniLM text tower that is ~11 M weights converted (and
a 21 MB buffer allocated and freed) per query batch, which a profile of the
server under load put at ~9 % of its CPU time. Autocast would cast these
weights to bf16 anyway, so storing them in bf16 once gives bit-identical
vectors without the per-batch copies. Only the Linear layers of a Hugging
Face text tower (MiniLM) are cast: every one of them feeds autocast's bf16
matmuls, and the tower takes its mask dtype from its (float32) embeddings. An
open_clip text transformer is left alone: it casts its residual stream to the
dtype of its first MLP weight, so casting would change its maths.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from pretrain.models import is_hf_text
from pretrain.precision import Precision


def text_linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The `nn.Linear` layers of `model`'s Hugging Face text tower; none for other towers."""
    if not is_hf_text(model):
        return []
    return [m for m in model.text.modules() if isinstance(m, nn.Linear)]


def prepare_query_encoder(encoder: Any, precision: Precision) -> None:
    """Cast, in place, the text side's Linear weights to the dtype autocast runs them in (bf16 only).

    Afterwards the encoder's text tower must run under that autocast (as `IndexBackend` does).
    """
    model = getattr(encoder, "model", None)
    if precision != "bf16" or not isinstance(model, nn.Module):  # fp32, or a test double without a model
        return
    for layer in text_linear_layers(model):
        layer.to(torch.bfloat16)


def share_cores_between_workers(workers: int) -> int:
    """Give each of the server's `workers` compute threads an equal share of the cores for its torch ops.

    torch's default intra-op pool has one thread per core, so `workers` encodes at once would put
    workers x cores threads on the cores, and OpenMP threads spin at barriers waiting for one that is
    descheduled: on the 2-core machine with another process busy, 16 clients got 30-40 queries/s with
    two workers of two threads each against 170-190 with one thread each. Returns the threads per op.
    """
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    torch.set_num_threads(threads)
    return threads
