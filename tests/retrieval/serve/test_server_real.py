"""The server over a real index: the emoji fixture embedded by a tiny (random, seeded) checkpoint."""

from __future__ import annotations

import base64
import gc
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from clipline.commands.serve import main as serve_main
from retrieval.retriever import Retriever
from retrieval.serve.api_schemas import SearchResponse
from retrieval.serve.backend import load_registry
from retrieval.serve.app import create_app
from tests.retrieval.conftest import FIXTURE_SHARDS
from tests.retrieval.serve.fakes import serve_config


@pytest.fixture(scope="module")
def registry(emoji_index: Path):
    return load_registry([("emoji", emoji_index), ("again", emoji_index)])


@pytest.fixture()
def client(registry) -> TestClient:
    with TestClient(create_app(registry, serve_config())) as c:
        yield c


def member_bytes(shard: Path, member: str) -> bytes:
    with tarfile.open(shard) as tar:
        return tar.extractfile(member).read()


def test_indices_share_one_encoder_and_load_both_sides(registry) -> None:
    first, second = list(registry)
    assert first.backend.encoder is second.backend.encoder
    assert first.backend.modalities == ("image", "text") and len(first.backend) == 48


@pytest.mark.parametrize(("modality", "text", "k"), [("image", "grinning face", 5), ("text", "cat", 4)])
def test_text_search_matches_the_retriever_on_either_side(client: TestClient, emoji_index: Path, encoder,
                                                          modality: str, text: str, k: int) -> None:
    direct = Retriever(emoji_index, modality=modality, encoder=encoder).search_text([text], k=k)[0]
    answer = client.post("/search", json={"text": text, "k": k, "modality": modality}).json()
    assert [h["key"] for h in answer["results"]] == [h["key"] for h in direct]
    assert [h["score"] for h in answer["results"]] == pytest.approx([h["score"] for h in direct], abs=1e-5)
    assert [h["caption"] for h in answer["results"]] == [h["caption"] for h in direct]


def test_k_larger_than_the_index_returns_all_of_it(client: TestClient) -> None:
    assert len(client.post("/search", json={"text": "flag", "k": 100}).json()["results"]) == 48


def test_image_urls_serve_the_member_bytes_from_the_shard(client: TestClient) -> None:
    stored = {member.rsplit(".", 1)[0]: (shard, member) for shard in sorted(FIXTURE_SHARDS.glob("*.tar"))
              for member in tarfile.open(shard).getnames() if member.endswith((".jpg", ".png"))}  # key -> its image
    for hit in client.post("/search", json={"text": "a red heart", "k": 3}).json()["results"]:
        response = client.get(hit["image_url"])
        assert response.status_code == 200
        shard, member = stored[hit["key"]]
        assert response.content == member_bytes(shard, member)
        assert response.headers["content-type"] == ("image/jpeg" if member.endswith(".jpg") else "image/png")


def test_query_by_a_stored_image_finds_it_first(client: TestClient) -> None:
    shard = sorted(FIXTURE_SHARDS.glob("*.tar"))[1]
    member = next(m for m in tarfile.open(shard).getnames() if m.endswith(".jpg"))
    data = member_bytes(shard, member)
    answer = client.post("/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"k": "3"}).json()
    assert answer["results"][0]["key"] == member.rsplit(".", 1)[0]
    assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    as_json = client.post("/search", json={"image": base64.b64encode(data).decode(), "k": 3}).json()
    assert [h["key"] for h in as_json["results"]] == [h["key"] for h in answer["results"]]


def test_added_rows_are_searchable_after_the_swap(emoji_index: Path, encoder) -> None:
    registry = load_registry([("emoji", emoji_index)])
    with TestClient(create_app(registry, serve_config())) as client:
        query = encoder.encode_text(["a purple giraffe on skis"]).numpy()[0]
        before = client.post("/search", json={"embedding": query.tolist(), "k": 3}).json()
        item = {"key": "giraffe-1", "caption": "a purple giraffe on skis",
                "image_embedding": query.tolist(), "text_embedding": query.tolist()}
        added = client.post("/indices/emoji/add", json={"items": [item]})
        assert added.json() == {"index": "emoji", "added": 1, "size": 49, "generation": 1}
        after = client.post("/search", json={"text": "a purple giraffe on skis", "k": 3}).json()
        assert after["generation"] == 1
        assert after["results"][0] | {"score": 0} == {"rank": 1, "key": "giraffe-1", "score": 0,
                                                        "caption": "a purple giraffe on skis", "image_url": None}
        assert after["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        # The rest are the old top hits, pushed down one place.
        assert [h["key"] for h in after["results"][1:]] == [h["key"] for h in before["results"][:2]]
        assert client.post("/indices/emoji/add", json={"items": [item]}).status_code == 409
        assert client.get("/images/emoji/giraffe-1").status_code == 404
        assert client.get("/indices").json()[0]["size"] == 49


def test_real_swaps_under_concurrent_text_queries(emoji_index: Path) -> None:
    registry = load_registry([("emoji", emoji_index)])
    served = next(iter(registry))
    app = create_app(registry, serve_config())
    failures: list[str] = []
    stop = threading.Event()
    rng = np.random.default_rng(0)

    with TestClient(app) as client:
        def query_loop() -> None:
            while not stop.is_set():
                answer = client.post("/search", json={"text": "smiling face", "k": 60})
                if answer.status_code != 200:
                    failures.append(answer.text)
                    continue
                body = answer.json()
                if len(body["results"]) != 48 + body["generation"]:
                    failures.append(f"generation {body['generation']} gave {len(body['results'])} results")

        threads = [threading.Thread(target=query_loop) for _ in range(3)]
        for thread in threads:
            thread.start()
        for g in range(6):
            vector = rng.normal(size=served.backend.embed_dim)
            item = {"key": f"new-{g}", "image_embedding": vector.tolist(), "text_embedding": vector.tolist()}
            assert client.post("/indices/emoji/add", json={"items": [item]}).status_code == 200
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:3]
    assert len(served.backend) == 54


def test_cli_loads_indices_and_starts_uvicorn(emoji_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = {}

    def fake_run(server, sockets=None):  # Server.run would block; keep the app and test it
        started.update(host=server.config.host, port=server.config.port, app=server.config.app, sockets=sockets)

    monkeypatch.setattr("uvicorn.Server.run", fake_run)
    try:
        serve_main([f"emoji={emoji_index}", "--port", "0", "--max-k", "7", "--api-key", "k"])
        assert gc.get_freeze_count() > 0  # the loaded objects are out of the collector's scans
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
    assert started["host"] == "127.0.0.1" and started["sockets"][0].getsockname()[0] == "127.0.0.1"
    started["sockets"][0].close()
    headers = {"x-api-key": "k", "host": "127.0.0.1:8123"}
    with TestClient(started["app"]) as client:
        assert client.post("/search", json={"text": "x", "k": 8}, headers=headers).status_code == 400
        answer = client.post("/search", json={"text": "x", "k": 7}, headers=headers)
        assert len(answer.json()["results"]) == 7
        assert client.post("/search", json={"text": "x"}, headers={"x-api-key": "k"}).status_code == 400  # Host
        assert client.post("/indices/emoji/add", json={"items": []}, headers=headers).status_code in (404, 405)


def test_search_answers_validate_against_the_documented_schema(client: TestClient) -> None:
    answer = client.post("/search", json={"text": "a red heart", "k": 4})
    assert answer.headers["content-type"] == "application/json"
    parsed = SearchResponse.model_validate_json(answer.content)  # the schema /docs promises
    assert [hit.rank for hit in parsed.results] == [1, 2, 3, 4]
    assert parsed.query_type == "text" and parsed.k == 4 and parsed.index == "emoji"
    assert all(hit.image_url == f"/images/emoji/{hit.key}" for hit in parsed.results)
    assert parsed.results[0].score >= parsed.results[-1].score


def test_bf16_query_encoding_finds_the_fp32_neighbours(emoji_index: Path) -> None:
    """`--precision bf16` (what auto picks on a CPU with native bf16) encodes queries under bf16 autocast:
    float32 unit vectors within cosine 0.999 of fp32's, and the same nearest rows."""
    fp32 = load_registry([("emoji", emoji_index)]).get(None).backend
    bf16 = load_registry([("emoji", emoji_index)], precision="bf16").get(None).backend
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    texts = ["cat", "a red apple", "smiling face with sunglasses"]
    a, b = fp32._encode_texts(texts), bf16._encode_texts(texts)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert np.all((a * b).sum(axis=1) > 0.999)
    assert not np.array_equal(a, b)  # bf16 really ran
    first = [[h["key"] for h in hits][:1] for hits in fp32.search_text(texts, 5, "text")]
    assert first == [[h["key"] for h in hits][:1] for hits in bf16.search_text(texts, 5, "text")]
