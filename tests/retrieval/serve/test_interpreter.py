"""Freezing the loaded objects: they leave the collector's scans, garbage made before is freed, not kept."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from retrieval.serve.interpreter import freeze_loaded_objects


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()


def tracked(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_live_objects_are_frozen_and_garbage_is_freed_first(unfrozen_after: None) -> None:
    kept = Node()
    cycle_a, cycle_b = Node(), Node()
    cycle_a.other, cycle_b.other = cycle_b, cycle_a
    garbage = weakref.ref(cycle_a)
    del cycle_a, cycle_b
    assert tracked(kept) and garbage() is not None
    frozen = freeze_loaded_objects()
    assert garbage() is None  # collected before the freeze, not kept for the server's life
    assert frozen == gc.get_freeze_count() > 0
    assert not tracked(kept)  # no collection walks it any more
    later = Node()
    assert tracked(later)  # objects made while serving are collected as usual
    later_cycle = Node()
    later_cycle.other = later_cycle
    freed = weakref.ref(later_cycle)
    del later_cycle
    gc.collect()
    assert freed() is None
