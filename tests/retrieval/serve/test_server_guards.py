"""The add route is opt-in and capped, the Host header is checked, k is an integer, a busy port and a
client that leaves mid-request are one line each."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipline.commands.serve import allowed_hosts
from retrieval.serve.config import ServeConfig, ServeLimits
from tests.clipline.running import error_line
from tests.retrieval.serve.fakes import ColorBackend, colors_app, embed_words


def items(start: int, count: int) -> list[dict]:
    vector = embed_words("red circle").tolist()
    return [{"key": f"mine-{i}", "caption": "mine", "image_embedding": vector, "text_embedding": vector}
            for i in range(start, start + count)]


def test_the_add_route_is_off_by_default(shard: Path) -> None:
    assert ServeConfig(limits=ServeLimits()).allow_add is False
    with TestClient(colors_app(shard, allow_add=False)) as client:
        response = client.post("/indices/colors/add", json={"items": items(0, 1)})
        assert response.status_code in (404, 405) and "detail" in response.json()
        assert "/indices/{name}/add" not in client.get("/openapi.json").json()["paths"]


def test_added_rows_are_capped_over_all_requests(shard: Path) -> None:
    with TestClient(colors_app(shard, limits=ServeLimits(max_added_rows=5))) as client:
        assert client.post("/indices/colors/add", json={"items": items(0, 3)}).status_code == 200
        over = client.post("/indices/colors/add", json={"items": items(3, 3)})
        assert over.status_code == 413 and "`max_added_rows`" in over.json()["detail"]
        assert client.post("/indices/colors/add", json={"items": items(3, 2)}).status_code == 200
        assert client.get("/indices").json()[0]["size"] == len(ColorBackend.from_shard(shard)) + 5


def test_add_needs_the_key_when_one_is_set(shard: Path) -> None:
    with TestClient(colors_app(shard, api_key="k3y")) as client:
        assert client.post("/indices/colors/add", json={"items": items(0, 1)}).status_code == 401
        assert client.post("/indices/colors/add", json={"items": items(0, 1)},
                           headers={"x-api-key": "k3y"}).status_code == 200


def test_other_host_headers_are_refused_with_a_detail(shard: Path) -> None:
    with TestClient(colors_app(shard, allowed_hosts=["testserver", "127.0.0.1"])) as client:
        assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
        rebound = client.post("/search", json={"text": "red"}, headers={"host": "evil.example:8000"})
        assert rebound.status_code == 400 and "Host header" in rebound.json()["detail"]
    default_hosts = ServeConfig(limits=ServeLimits()).allowed_hosts
    with TestClient(colors_app(shard, allowed_hosts=default_hosts)) as default:
        assert default.get("/health").status_code == 400  # 'testserver' is not loopback: refused by default
        assert default.get("/health", headers={"host": "localhost:8000"}).status_code == 200


def test_default_allowed_hosts_follow_the_bind() -> None:
    assert allowed_hosts("127.0.0.1", None) == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts("::1", None) == ["[::1]", "localhost", "127.0.0.1"]
    assert allowed_hosts("10.0.0.5", None) == ["10.0.0.5"]
    assert allowed_hosts("0.0.0.0", None) == ["*"]
    assert allowed_hosts("0.0.0.0", ["search.example.org"]) == ["search.example.org"]


@pytest.mark.parametrize("k", ["10", True, 2.5, None])
def test_k_must_be_a_json_integer(shard: Path, k: object) -> None:
    with TestClient(colors_app(shard)) as client:
        response = client.post("/search", json={"text": "red circle", "k": k})
        assert response.status_code == 422 and "k" in response.json()["detail"]


def test_k_in_a_form_is_a_whole_number(shard: Path) -> None:
    with TestClient(colors_app(shard)) as client:
        assert len(client.post("/search", data={"text": "red circle", "k": "2"}).json()["results"]) == 2
        assert client.post("/search", data={"text": "red circle", "k": "two"}).status_code == 422


def test_a_client_that_leaves_mid_body_is_one_log_line(shard: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = colors_app(shard)
    body = json.dumps({"text": "red circle"}).encode()
    messages = iter([{"type": "http.request", "body": body[:5], "more_body": True}, {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/search", "raw_path": b"/search", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())], "client": ("127.0.0.1", 5), "server": None}
    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))
    records = [r for r in caplog.records if r.levelno >= logging.INFO and "disconnect" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info]


def test_serve_on_a_busy_port_is_one_error_line(shard: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    index.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = error_line(["serve", str(index), "--port", str(port)], capsys, alone=True)
    assert f"127.0.0.1:{port}" in line and "--port" in line
