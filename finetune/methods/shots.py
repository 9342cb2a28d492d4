"""k-shot sampling and the validation split hyperparameters are chosen on.

Protocol (CoOp / Tip-Adapter for k shots, CLIP_benchmark for all data):
- k shots: per class, a seeded permutation of its samples; the first k train,
  the next min(k, val_shots) form the validation set. The permutation does not
  depend on k, so for one seed the 1-shot set is inside the 2-shot set, etc.
- all: per class, `val_fraction` of the samples (a seeded draw) are carved off
  as validation; methods may refit on train + val once hyperparameters are fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from finetune.errors import FinetuneError

Shots = int | Literal["all"]


@dataclass(frozen=True, kw_only=True)
class ShotSplit:
    """Indices into a labelled pool: the training shots and the validation set."""

    train: Tensor
    """(N_train,) indices of the training samples, class by class."""
    val: Tensor
    """(N_val,) indices of the validation samples, disjoint from `train`."""
    val_from_train: bool
    """True when `val` was carved from the training data (shots="all"), so a method may refit on both."""


def sample_shots(labels: Tensor, classnames: Sequence[str], shots: Shots, seed: int, *, val_shots: int = 4,
                 val_fraction: float = 0.2) -> ShotSplit:
    """Draw `shots` training samples per class (and a validation set) from `labels` (N,).

    Raises FinetuneError naming the first class with fewer than `shots` samples.
    """
    if shots != "all" and (not isinstance(shots, int) or shots < 1):
        raise FinetuneError(f"`shots` must be a positive integer or 'all', got {shots!r}")
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c, name in enumerate(classnames):
        members = torch.nonzero(labels == c).flatten()
        order = members[torch.randperm(len(members), generator=generator)]
        if shots == "all":
            n_val = int(len(order) * val_fraction) if len(order) > 1 else 0
            val.append(order[:n_val])
            train.append(order[n_val:])
            continue
        if len(order) < shots:
            raise FinetuneError(
                f"class {name!r} has only {len(order)} training samples but `shots` {shots} was asked; "
                f"use `shots` {len(order)} or fewer, or add data for that class"
            )
        train.append(order[:shots])
        val.append(order[shots : shots + min(shots, val_shots)])
    return ShotSplit(train=torch.cat(train), val=torch.cat(val), val_from_train=shots == "all")


def parse_shots(text: str) -> list[Shots]:
    """'1,2,4,all' -> [1, 2, 4, 'all']."""
    out: list[Shots] = []
    for word in text.split(","):
        word = word.strip()
        if word == "all":
            out.append("all")
        elif word.isdigit() and int(word) > 0:
            out.append(int(word))
        else:
            raise FinetuneError(f"bad shot count {word!r} in {text!r}; use positive integers or 'all', e.g. 1,2,4,8,16")
    return out
