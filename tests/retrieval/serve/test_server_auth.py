"""API key, refusing unsafe binds, and the `clipline serve` command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipline.commands.serve import parse_index_arg
from retrieval.errors import RetrievalError
from retrieval.serve.guards import check_bind_safety, is_loopback_host
from retrieval.serve.registry import IndexRegistry, ServedIndex
from tests.clipline.running import error_line
from tests.retrieval.serve.fakes import ColorBackend, colors_app, write_color_shard

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def client(shard: Path) -> TestClient:
    with TestClient(colors_app(shard, api_key=KEY)) as c:
        yield c


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": KEY[:-1]},
                                     {"authorization": "Basic " + KEY}, {"cookie": "clipline_api_key=nope"}])
def test_api_routes_refuse_without_the_right_key(client: TestClient, headers: dict) -> None:
    for response in (client.post("/search", json={"text": "red"}, headers=headers),
                     client.get("/indices", headers=headers),
                     client.get("/images/colors/red_circle", headers=headers),
                     client.post("/indices/colors/add", json={"items": []}, headers=headers)):
        assert response.status_code == 401
        assert "API key" in response.json()["detail"]


@pytest.mark.parametrize("headers", [{"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"},
                                     {"cookie": f"other=1; clipline_api_key={KEY}"}])
def test_api_routes_accept_the_key(client: TestClient, headers: dict) -> None:
    response = client.post("/search", json={"text": "red circle", "k": 1}, headers=headers)
    assert response.status_code == 200
    assert response.json()["results"][0]["key"] == "red_circle"
    assert client.get("/images/colors/red_circle", headers=headers).status_code == 200


def test_page_health_and_docs_stay_public(client: TestClient) -> None:
    for path in ("/", "/health", "/docs", "/openapi.json", "/static/app.js"):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)
    check_bind_safety(host, api_key=None, insecure=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com", "localhost.evil.com"])
def test_public_hosts_need_a_key_or_insecure(host: str) -> None:
    assert not is_loopback_host(host)
    with pytest.raises(RetrievalError, match="`api_key`"):
        check_bind_safety(host, api_key=None, insecure=False)
    check_bind_safety(host, api_key="k", insecure=False)
    check_bind_safety(host, api_key=None, insecure=True)


def test_cli_refuses_public_bind_without_key(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPLINE_API_KEY", raising=False)
    line = error_line(["serve", str(tmp_path), "--host", "0.0.0.0"], capsys, alone=True)
    assert line.startswith("error: --host 0.0.0.0")


def test_cli_reports_missing_index_dir_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "does not exist" in error_line(["serve", str(tmp_path / "absent")], capsys, alone=True)


def test_cli_bad_flag_is_one_line(capsys: pytest.CaptureFixture) -> None:
    error_line(["serve", "x", "--port", "not-a-port"], capsys, alone=True)


@pytest.mark.parametrize("flags", [["--max-k", "0"], ["--compute-threads", "0"], ["--port", "70000"],
                                   ["--max-image-mb", "-1"]])
def test_cli_refuses_bad_limits(tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str]) -> None:
    assert error_line(["serve", str(tmp_path), *flags], capsys, alone=True).startswith(f"error: {flags[0]}")


def test_index_names(tmp_path: Path) -> None:
    (tmp_path / "emoji-index").mkdir()
    assert parse_index_arg(str(tmp_path / "emoji-index")) == ("emoji-index", tmp_path / "emoji-index")
    assert parse_index_arg(f"big={tmp_path / 'emoji-index'}") == ("big", tmp_path / "emoji-index")
    with pytest.raises(RetrievalError, match="not usable in URLs"):
        parse_index_arg(f"a/b={tmp_path / 'emoji-index'}")


def test_two_indices_with_one_name_are_refused(tmp_path: Path) -> None:
    backend = ColorBackend.from_shard(write_color_shard(tmp_path))
    with pytest.raises(RetrievalError, match="distinct names"):
        IndexRegistry([ServedIndex("a", backend), ServedIndex("a", backend)])
