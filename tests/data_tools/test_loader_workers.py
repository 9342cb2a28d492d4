"""Loader worker count when the caller does not choose one, and workers at idle priority."""

from __future__ import annotations

import os

import pytest
import torch

from data_tools.loader import LoaderConfig, make_loader
from data_tools.loader_workers import auto_loader_workers, idle_priority_supported
from tests.data_tools.conftest import FIXTURE_SHARDS, to_tensor


@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 0), (4, 2), (16, 2)])
def test_auto_workers_avoid_extra_processes_on_small_machines(monkeypatch, cores: int, expected: int) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert auto_loader_workers(None) == expected
    assert auto_loader_workers(3) == 3 and auto_loader_workers(0) == 0  # an explicit request always wins


def _scheduling_policy(image) -> torch.Tensor:
    """An image transform that reports the scheduling policy of the process running it."""
    return torch.full((1,), os.sched_getscheduler(0))


@pytest.mark.skipif(not idle_priority_supported(), reason="no SCHED_IDLE on this OS")
def test_idle_workers_load_the_same_batches_at_idle_priority() -> None:
    batches = {}
    for idle in (False, True):
        config = LoaderConfig(batch_size=8, num_workers=1, idle_workers=idle, shuffle=True, seed=5)
        loader = make_loader(FIXTURE_SHARDS, config, image_transform=to_tensor)
        batches[idle] = [(batch["key"], batch["image"]) for batch in loader]
        policies = {int(p) for b in make_loader(FIXTURE_SHARDS, config, image_transform=_scheduling_policy)
                    for p in b["image"].flatten()}
        assert policies == {os.SCHED_IDLE if idle else os.SCHED_OTHER}
    assert len(batches[True]) > 2
    for (keys, images), (idle_keys, idle_images) in zip(batches[False], batches[True], strict=True):
        assert keys == idle_keys and torch.equal(images, idle_images)
