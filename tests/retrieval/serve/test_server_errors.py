"""Bad requests get a 4xx with a message, never a 5xx or a stack trace; no path leaves the index."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from data_tools.image_ops import encode_png
from retrieval.serve.config import ServeLimits
from tests.retrieval.serve.fakes import DIM, ColorBackend, colors_app, draw

LIMITS = ServeLimits(max_k=50, max_text_chars=200, max_image_bytes=200_000, max_image_pixels=1_000_000,
                     max_body_bytes=300_000, max_add_items=5)
PNG = encode_png(draw("red", "circle"))


@pytest.fixture(scope="module")
def client(shard: Path) -> TestClient:
    with TestClient(colors_app(shard, limits=LIMITS), raise_server_exceptions=False) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bomb_png() -> bytes:
    """A few kB of PNG that decodes to 64 M pixels."""
    return encode_png(Image.new("1", (8000, 8000)))


JSON_CASES = {
    "no query": ({"k": 3}, 422, "exactly one"),
    "two queries": ({"text": "red", "embedding": [1.0] * DIM}, 422, "exactly one"),
    "unknown field": ({"txt": "red"}, 422, "txt"),
    "k zero": ({"text": "red", "k": 0}, 422, "k"),
    "k over limit": ({"text": "red", "k": 51}, 400, "limit of 50"),
    "k huge": ({"text": "red", "k": 10**30}, 400, "limit"),
    "k string": ({"text": "red", "k": "many"}, 422, "k"),
    "k float": ({"text": "red", "k": 2.5}, 422, "k"),
    "empty text": ({"text": "   "}, 400, "empty"),
    "long text": ({"text": "a" * 201}, 413, "limit is 200"),
    "text number": ({"text": 5}, 422, "text"),
    "text list": ({"text": ["red"]}, 422, "text"),
    "bad modality": ({"text": "red", "modality": "audio"}, 422, "modality"),
    "unknown index": ({"text": "red", "index": "../etc"}, 404, "no index named"),
    "not base64": ({"image": "%%%not base64%%%"}, 400, "base64"),
    "not an image": ({"image": b64(b"hello world, not a picture")}, 400, "could not be decoded"),
    "truncated png": ({"image": b64(PNG[: len(PNG) // 2])}, 400, "could not be decoded"),
    "empty image": ({"image": ""}, 400, "empty"),
    "image too many bytes": ({"image": b64(b"\0" * 250_000)}, 413, "limit"),
    "decompression bomb": ({"image": b64(bomb_png())}, 413, "pixels"),
    "data url not base64": ({"image": "data:image/png,abc"}, 400, "base64"),
    "embedding wrong dim": ({"embedding": [1.0] * (DIM + 1)}, 400, f"needs {DIM}"),
    "embedding zeros": ({"embedding": [0.0] * DIM}, 400, "zeros"),
    "embedding huge values": ({"embedding": [1e308] * DIM}, 200, ""),
    "embedding strings": ({"embedding": ["a"] * DIM}, 422, "embedding"),
    "embedding empty": ({"embedding": []}, 400, "needs"),
    "embedding nested": ({"embedding": [[1.0]] * DIM}, 422, "embedding"),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_bad_json_fields_get_4xx_with_message(client: TestClient, case: str) -> None:
    body, status, words = JSON_CASES[case]
    response = client.post("/search", json=body)
    assert response.status_code == status, response.text
    if status != 200:
        assert words in response.json()["detail"]
        assert "Traceback" not in response.text


RAW_CASES = {
    "invalid json": (b"{bad json", "application/json", 400, "not valid JSON"),
    "json array": (b"[1, 2]", "application/json", 422, "JSON object"),
    "json null": (b"null", "application/json", 422, "JSON object"),
    "empty body": (b"", "application/json", 400, "empty body"),
    "nan embedding": (b'{"embedding": [NaN, 1, 1, 1, 1, 1, 1, 1]}', "application/json", 422, "finite"),
    "overflowing float": (b'{"embedding": [1e400, 1, 1, 1, 1, 1, 1, 1]}', "application/json", 422, "finite"),
    "deep nesting": (b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", 400, "JSON"),
    "invalid utf8": (b'{"text": "\xff\xfe"}', "application/json", 400, "JSON"),
    "plain text": (b"red circle", "text/plain", 415, "Content-Type"),
    "no content type": (b'{"text": "red"}', "", 415, "Content-Type"),
    "xml": (b"<q>red</q>", "application/xml", 415, "Content-Type"),
    "form with json": (b'{"text": "red"}', "application/x-www-form-urlencoded", 422, "unknown form field"),
    "broken multipart": (b"--xx\r\nnot really", "multipart/form-data; boundary=xx", 400, ""),
    "multipart no boundary": (b"abc", "multipart/form-data", 400, ""),
}


@pytest.mark.parametrize("case", list(RAW_CASES))
def test_malformed_bodies_get_4xx_with_message(client: TestClient, case: str) -> None:
    body, content_type, status, words = RAW_CASES[case]
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/search", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_multipart_errors(client: TestClient) -> None:
    wrong_field = client.post("/search", files={"picture": ("q.png", PNG, "image/png")})
    assert wrong_field.status_code == 422 and "'image'" in wrong_field.json()["detail"]
    garbage = client.post("/search", files={"image": ("q.png", b"GIF89a garbage", "image/png")})
    assert garbage.status_code == 400 and "could not be decoded" in garbage.json()["detail"]
    too_big = client.post("/search", files={"image": ("q.png", b"\0" * 250_000, "image/png")})
    assert too_big.status_code == 413
    two_files = client.post("/search", files=[("image", ("a.png", PNG, "image/png")), ("image", ("b.png", PNG, "image/png"))])
    assert two_files.status_code == 400
    both = client.post("/search", files={"image": ("q.png", PNG, "image/png")}, data={"text": "red"})
    assert both.status_code == 422 and "exactly one" in both.json()["detail"]
    bad_k = client.post("/search", files={"image": ("q.png", PNG, "image/png")}, data={"k": "lots"})
    assert bad_k.status_code == 422


def test_body_over_limit_is_refused_by_length_and_when_chunked(client: TestClient) -> None:
    big = b'{"text": "' + b"a" * 400_000 + b'"}'
    declared = client.post("/search", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "300000" in declared.json()["detail"]

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    chunked = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def test_wrong_methods_and_routes(client: TestClient) -> None:
    assert client.get("/search").status_code == 405
    assert client.get("/nowhere").status_code == 404
    assert client.delete("/indices").status_code == 405


TRAVERSAL_PATHS = [
    "/images/colors/..%2F..%2F..%2Fetc%2Fpasswd",
    "/images/colors/%2Fetc%2Fpasswd",
    "/images/colors/..",
    "/images/colors/%2e%2e",
    "/images/colors/00000.tar",
    "/images/colors/red_circle.png",  # a member name, but not a key
    "/images/colors/red_circle.json",
    "/images/..%2F..%2Fetc/passwd",
    "/images/colors/red_circle%00.png",
    "/images/colors/~root",
    "/images/%2Fetc%2Fpasswd",
    "/static/..%2F..%2Fserver.py",
    "/static/../server.py",
    "/images/colors/red_circle/../../../../etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSAL_PATHS)
def test_image_route_reads_nothing_outside_the_index(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, (path, response.status_code)
    assert b"root:" not in response.content and b"import" not in response.content


def test_unknown_key_and_index_on_image_route(client: TestClient) -> None:
    unknown_key = client.get("/images/colors/no_such_key")
    assert unknown_key.status_code == 404 and "no stored image" in unknown_key.json()["detail"]
    assert client.get("/images/other/red_circle").status_code == 404


def test_internal_error_is_500_without_internals(shard: Path) -> None:
    class Broken(ColorBackend):
        def search_text(self, texts, k, modality):
            raise RuntimeError("secret internal detail at /srv/data")

    with TestClient(colors_app(Broken.from_shard(shard), limits=LIMITS), raise_server_exceptions=False) as c:
        response = c.post("/search", json={"text": "red"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the server log has the details"}
    assert "secret" not in response.text


RED = [1] + [0] * (DIM - 1)  # the embedding of "red"


def add_body(*items: dict) -> bytes:
    return json.dumps({"items": list(items)}).encode()


ADD_CASES = {
    "not json": (b"{", 400),
    "no items": (add_body(), 422),
    "too many items": (add_body(*[{"key": "x"}] * 6), 413),
    "missing embedding": (add_body({"key": "n1", "caption": "c"}), 400),
    "wrong dim": (add_body({"key": "n1", "image_embedding": [1], "text_embedding": [1]}), 400),
    "duplicate in request": (add_body(*[{"key": "d", "image_embedding": RED, "text_embedding": RED}] * 2), 400),
    "existing key": (add_body({"key": "red_circle", "image_embedding": RED, "text_embedding": RED}), 409),
    "zero vector": (add_body({"key": "z", "image_embedding": [0] * DIM, "text_embedding": RED}), 400),
    "empty key": (add_body({"key": "", "image_embedding": RED}), 422),
}


@pytest.mark.parametrize("case", list(ADD_CASES))
def test_bad_add_requests_leave_the_index_unchanged(client: TestClient, case: str) -> None:
    body, status = ADD_CASES[case]
    response = client.post("/indices/colors/add", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    info = client.get("/indices").json()[0]
    assert info["size"] == 12 and info["generation"] == 0


def test_add_needs_json_and_a_known_index(client: TestClient) -> None:
    assert client.post("/indices/colors/add", content=b"items", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/indices/nope/add", json={"items": [{"key": "a"}]}).status_code == 404
