"""Micro-batching and atomic index swaps under concurrent queries, on a real uvicorn server."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest

from retrieval.client import SearchClient, SearchClientError
from retrieval.serve.config import ServeLimits
from retrieval.serve.app import create_app
from retrieval.serve.registry import AddedItems, IndexRegistry, ServedIndex
from retrieval.serve.text_batcher import TextSearchBatcher
from tests.retrieval.serve.fakes import COLORS, DIM, ColorBackend, colors_app, draw, running_server, serve_config


@dataclasses.dataclass(eq=False)
class CountingBackend(ColorBackend):
    """Records the size of every search_text call; each takes `seconds` (as an encode of a batch would)."""

    calls: list[int] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def search_text(self, texts, k, modality):
        time.sleep(self.seconds)
        self.calls.append(len(texts))
        return super().search_text(texts, k, modality)


def test_batcher_merges_waiting_queries_and_answers_each_its_own(shard: Path) -> None:
    backend = CountingBackend.from_shard(shard)
    served = ServedIndex("colors", backend)
    queries = [(f"{color} {shape}", k) for color in COLORS for shape, k in (("circle", 1), ("square", 3))]

    async def run() -> list[tuple[int, list[dict]]]:
        batcher = TextSearchBatcher(anyio.CapacityLimiter(1), max_batch=64)
        try:
            return await asyncio.gather(*(batcher.search(served, text, k, "image") for text, k in queries))
        finally:
            await batcher.close()

    answers = asyncio.run(run())
    assert backend.calls == [len(queries)]  # all were queued before the worker ran: one batch
    for (text, k), (generation, hits) in zip(queries, answers):
        assert generation == 0 and len(hits) == k
        assert hits[0]["key"] == text.replace(" ", "_")


def test_batched_and_unbatched_servers_answer_alike(shard: Path) -> None:
    answers = {}
    for batch_text in (True, False):
        with running_server(colors_app(CountingBackend.from_shard(shard), batch_text=batch_text)) as url:
            client = SearchClient(url)
            answers[batch_text] = [[(h["key"], h["score"], h["image_url"][len(url):]) for h in
                                    client.search_text(f"{c} circle", k=4)] for c in COLORS]
    assert answers[True] == answers[False]


def test_client_round_trip(shard: Path) -> None:
    app = colors_app(shard, api_key="k1")
    with running_server(app) as url:
        client = SearchClient(url, api_key="k1")
        hits = client.search_text("green square", k=2)
        assert hits[0]["key"] == "green_square" and hits[0]["image_url"] == f"{url}/images/colors/green_square"
        assert client.search_image(draw("black", "circle"), k=1)[0]["key"] == "black_circle"
        vector = np.zeros(DIM)
        vector[list(COLORS).index("blue")] = 1
        assert {h["key"] for h in client.search_embedding(vector, k=2)} == {"blue_circle", "blue_square"}
        png = client.image_bytes(hits[0]["image_url"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and client.image_bytes("green_square") == png
        assert client.indices()[0]["size"] == 12 and client.health()["status"] == "ok"
        added = client.add("colors", [{"key": "n", "caption": "new", "image_embedding": vector.tolist(),
                                       "text_embedding": vector.tolist()}])
        assert added == {"index": "colors", "added": 1, "size": 13, "generation": 1}
        with pytest.raises(SearchClientError) as bad:
            client.search_text("x" * 5000)
        assert bad.value.status == 413 and "limit" in bad.value.detail
        with pytest.raises(SearchClientError) as unauthorised:
            SearchClient(url).search_text("red")
        assert unauthorised.value.status == 401
    with pytest.raises(SearchClientError, match="cannot reach"):
        SearchClient(url, timeout=2).health()


def unit_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_queries_during_swaps_see_old_or_new_index_never_broken(shard: Path) -> None:
    """Each add swaps in a bigger index while 4 threads query; every answer must match one generation."""
    backend = ColorBackend.from_shard(shard, add_delay_s=0.02)  # queries keep arriving while each new index is built
    served = ServedIndex("colors", backend)
    app = create_app(IndexRegistry([served]), serve_config(limits=ServeLimits(max_k=1000)))
    swaps, per_add = 15, 3
    seen: Counter = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def query_loop(url: str, body: dict) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/search", json=body)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                answer = response.json()
                generation, results = answer["generation"], answer["results"]
                expected = {f"g{g}_{i}" for g in range(1, generation + 1) for i in range(per_add)} | set(backend.keys)
                if len(results) != 12 + per_add * generation or {h["key"] for h in results} != expected:
                    failures.append(f"generation {generation} answered {len(results)} results")
                seen[generation] += 1

    with running_server(app) as url:
        bodies = [{"text": "red", "k": 1000}, {"text": "blue circle", "k": 1000, "modality": "text"},
                  {"embedding": [1.0] * DIM, "k": 1000}, {"text": "green", "k": 1000}]
        threads = [threading.Thread(target=query_loop, args=(url, body)) for body in bodies]
        for thread in threads:
            thread.start()
        with httpx.Client(base_url=url, timeout=30) as http:
            for g in range(1, swaps + 1):
                vectors = unit_rows(per_add, g)
                items = [{"key": f"g{g}_{i}", "caption": f"added {g}", "image_embedding": vectors[i].tolist(),
                          "text_embedding": vectors[i].tolist()} for i in range(per_add)]
                response = http.post("/indices/colors/add", json={"items": items})
                assert response.status_code == 200, response.text
                assert response.json()["generation"] == g
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures, failures[:5]
    assert sum(seen.values()) >= 20 and len(seen) >= 2  # queries really ran across generations
    assert len(served.backend) == 12 + swaps * per_add


def test_concurrent_writers_do_not_lose_items(shard: Path) -> None:
    served = ServedIndex("colors", ColorBackend.from_shard(shard))

    def add(thread_id: int) -> None:
        for n in range(5):
            vectors = unit_rows(1, thread_id * 100 + n)
            served.add(AddedItems(keys=[f"t{thread_id}_{n}"], captions=[""], image_embeddings=vectors,
                                  text_embeddings=vectors))

    with ThreadPoolExecutor(4) as writers:
        list(writers.map(add, range(4)))  # list: a writer's exception is raised here
    assert len(served.backend) == 12 + 20 and served.snapshot().generation == 20


def test_batcher_under_load_waits_for_the_rest_of_the_last_batch(shard: Path) -> None:
    """After a batch of 8, one query alone does not get a batch of its own while 5 more are arriving;
    with nothing else arriving it is answered once a quarter of the last batch's time has passed."""
    backend = CountingBackend.from_shard(shard, seconds=0.2)
    served = ServedIndex("colors", backend)

    async def run() -> None:
        batcher = TextSearchBatcher(anyio.CapacityLimiter(1), max_batch=64)
        ask = lambda i: batcher.search(served, f"{list(COLORS)[i % len(COLORS)]} circle", 1, "image")  # noqa: E731
        try:
            await asyncio.gather(*(ask(i) for i in range(8)))  # one batch of 8
            first = asyncio.ensure_future(ask(8))
            await asyncio.sleep(0.005)  # the others come back a little later
            answers = await asyncio.gather(first, *(ask(i) for i in range(9, 14)))
            assert all(len(hits) == 1 for _, hits in answers)
            await ask(14)  # alone, after a batch of 6: waits at most 0.05 s, then runs by itself
        finally:
            await batcher.close()

    asyncio.run(run())
    assert backend.calls == [8, 6, 1]


def test_batcher_at_low_load_runs_each_query_at_once(shard: Path) -> None:
    backend = CountingBackend.from_shard(shard)
    served = ServedIndex("colors", backend)

    async def run() -> None:
        batcher = TextSearchBatcher(anyio.CapacityLimiter(1), max_batch=64)
        try:
            for color in list(COLORS)[:3]:
                await batcher.search(served, f"{color} square", 1, "image")
        finally:
            await batcher.close()

    asyncio.run(run())
    assert backend.calls == [1, 1, 1]
