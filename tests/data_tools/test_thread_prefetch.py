"""Background-thread prefetch: same items in the same order, errors where they happened, bounded, stoppable."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from data_tools.thread_prefetch import prefetch_in_thread


def test_yields_every_item_in_order() -> None:
    assert list(prefetch_in_thread(iter(range(100)), depth=3)) == list(range(100))
    assert list(prefetch_in_thread([])) == []


def test_an_error_while_producing_is_raised_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad shard")

    got = []
    with pytest.raises(ValueError, match="bad shard"):
        for item in prefetch_in_thread(items()):
            got.append(item)
    assert got == [1, 2]


def test_stays_at_most_depth_ahead_and_stops_when_the_consumer_does() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetch_in_thread(items(), depth=2)
    assert next(stream) == 0
    time.sleep(0.5)  # give the producer time to run ahead as far as it may
    assert len(produced) <= 1 + 2 + 1  # the one consumed, a full queue, one waiting to be put
    before = threading.active_count()
    stream.close()  # the consumer stops early: the thread must end, not block on the full queue
    assert threading.active_count() == before - 1
    assert len(produced) < 10
