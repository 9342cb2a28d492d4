"""k-shot sampling: exact counts, disjoint validation, determinism, nesting, bad requests."""

from __future__ import annotations

import pytest
import torch

from finetune.errors import FinetuneError
from finetune.methods.shots import parse_shots, sample_shots

CLASSES = ["cat", "dog", "owl"]


def pool(counts: list[int]) -> torch.Tensor:
    """Labels with counts[c] samples of class c, interleaved so indices are not class-sorted."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(123))]


def test_exactly_k_per_class_and_val_disjoint() -> None:
    labels = pool([30, 25, 40])
    split = sample_shots(labels, CLASSES, 4, seed=1, val_shots=4)
    assert torch.bincount(labels[split.train], minlength=3).tolist() == [4, 4, 4]
    assert torch.bincount(labels[split.val], minlength=3).tolist() == [4, 4, 4]
    assert set(split.train.tolist()).isdisjoint(split.val.tolist())
    assert len(set(split.train.tolist())) == 12  # no index drawn twice
    assert not split.val_from_train


def test_val_is_min_of_k_and_val_shots() -> None:
    labels = pool([30, 30, 30])
    assert len(sample_shots(labels, CLASSES, 1, seed=1, val_shots=4).val) == 3
    assert len(sample_shots(labels, CLASSES, 16, seed=1, val_shots=4).val) == 12


def test_same_seed_same_draw_other_seed_other_draw() -> None:
    labels = pool([50, 50, 50])
    a = sample_shots(labels, CLASSES, 8, seed=7)
    b = sample_shots(labels, CLASSES, 8, seed=7)
    c = sample_shots(labels, CLASSES, 8, seed=8)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert set(a.train.tolist()) != set(c.train.tolist())


def test_smaller_k_is_inside_larger_k_for_one_seed() -> None:
    labels = pool([50, 50, 50])
    sets = {k: set(sample_shots(labels, CLASSES, k, seed=3).train.tolist()) for k in (1, 2, 4, 8, 16)}
    assert sets[1] < sets[2] < sets[4] < sets[8] < sets[16]


def test_all_carves_a_fraction_of_each_class() -> None:
    labels = pool([50, 20, 10])
    split = sample_shots(labels, CLASSES, "all", seed=1, val_fraction=0.2)
    assert torch.bincount(labels[split.val], minlength=3).tolist() == [10, 4, 2]
    assert len(split.train) + len(split.val) == 80
    assert set(split.train.tolist()).isdisjoint(split.val.tolist())
    assert split.val_from_train


def test_too_many_shots_names_the_class() -> None:
    labels = pool([30, 3, 40])
    with pytest.raises(FinetuneError, match=r"class 'dog' has only 3 training samples but `shots` 4"):
        sample_shots(labels, CLASSES, 4, seed=1)


def test_parse_shots() -> None:
    assert parse_shots("1,2, 4,all") == [1, 2, 4, "all"]
    for bad in ("0", "two", "1,,2", "-1"):
        with pytest.raises(FinetuneError):
            parse_shots(bad)
