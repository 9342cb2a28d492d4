"""Micro-batching of text queries: concurrent requests share one encode and one search.

A text encode and an index search cost little more for 32 queries than for
one (one forward pass, one BLAS call), so under load the server merges the
queries waiting in the queue. A single worker task takes the first waiting
query, then every query that is already queued (optionally waiting
`wait_s` for more), groups them by (index, modality), runs each group as one
`search_text(texts, max k)` call in a worker thread and hands each request its
own top-k. At low load a batch is one query: no latency is added.

Under load, closed-loop clients come back at different moments: right after a
batch of 15 is answered, the queue may hold one query, and the rest arrive
over the next few milliseconds while the event loop reads and parses them. A
batch of one costs nearly what a batch of 15 does (the text tower's weights
are streamed once per batch either way), so a worker whose queue holds less
than half of its last batch waits, for at most a quarter of that batch's
compute time, until the queue holds as many as the last batch did. At low
load the last batch was one query and nobody waits.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from retrieval.serve.registry import ServedIndex


@dataclass
class _Pending:
    served: ServedIndex
    text: str
    k: int
    modality: str
    future: asyncio.Future = field(repr=False)


class TextSearchBatcher:
    """Queue + worker tasks (per event loop) that run merged text searches."""

    def __init__(self, limiter: anyio.CapacityLimiter, max_batch: int, wait_s: float = 0.0, workers: int = 1) -> None:
        self._limiter = limiter
        self._max_batch = max_batch
        self._wait_s = wait_s
        self._worker_count = workers
        self._queue: asyncio.Queue[_Pending] | None = None
        self._workers: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None  # set on every put; wakes a worker filling a batch

    async def search(self, served: ServedIndex, text: str, k: int, modality: str) -> tuple[int, list[dict]]:
        """(generation of the snapshot searched, top-k hits) for one text query."""
        queue = self._ensure_worker()
        future = asyncio.get_running_loop().create_future()
        await queue.put(_Pending(served, text, k, modality, future))
        assert self._arrived is not None
        self._arrived.set()
        return await future

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers, self._queue, self._loop = [], None, None

    def _ensure_worker(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        # A new loop (e.g. a second test client) needs its own queue and workers.
        if self._loop is not loop or not self._workers or any(w.done() for w in self._workers):
            self._loop = loop
            self._queue = asyncio.Queue()
            self._arrived = asyncio.Event()
            self._workers = [loop.create_task(self._run()) for _ in range(self._worker_count)]
        assert self._queue is not None
        return self._queue

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        last_size, last_seconds = 1, 0.0  # this worker's previous batch
        while True:
            batch = [await queue.get()]
            if self._wait_s > 0:
                await asyncio.sleep(self._wait_s)
            self._take_queued(batch)
            if 2 * len(batch) < last_size:  # under load: the rest of the last batch's clients are on their way
                await self._fill(batch, min(last_size, self._max_batch), deadline=time.perf_counter() + last_seconds / 4)
            batch = [p for p in batch if not p.future.cancelled()]  # client went away
            if batch:
                started = time.perf_counter()
                await self._run_batch(batch)
                last_size, last_seconds = len(batch), time.perf_counter() - started

    def _take_queued(self, batch: list[_Pending]) -> None:
        assert self._queue is not None
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _fill(self, batch: list[_Pending], target: int, deadline: float) -> None:
        """Add queries to `batch` as they arrive, until it holds `target` or `deadline` (perf_counter) passes."""
        assert self._arrived is not None
        while len(batch) < target:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return
            self._take_queued(batch)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        groups: dict[tuple[int, str], list[_Pending]] = defaultdict(list)
        for pending in batch:
            groups[(id(pending.served), pending.modality)].append(pending)
        for members in groups.values():
            snapshot = members[0].served.snapshot()  # one snapshot for the whole group
            texts = [p.text for p in members]
            k = max(p.k for p in members)  # one search, at the largest k asked
            try:
                results = await anyio.to_thread.run_sync(snapshot.backend.search_text, texts, k, members[0].modality,
                                                         limiter=self._limiter)
            except Exception as exc:  # noqa: BLE001 - handed to each waiting request, which reports it
                for pending in members:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            for pending, hits in zip(members, results):
                if not pending.future.done():
                    pending.future.set_result((snapshot.generation, hits[: pending.k]))
