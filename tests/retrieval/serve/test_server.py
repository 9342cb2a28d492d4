"""The search API's happy paths, against a real shard and a backend with exact embeddings."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from data_tools.image_ops import encode_png
from retrieval.serve.app import create_app
from retrieval.serve.registry import IndexRegistry, ServedIndex
from tests.retrieval.serve.fakes import COLORS, DIM, ColorBackend, draw, serve_config, write_color_shard


@pytest.fixture(scope="module")
def client(shard: Path, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    full = ServedIndex("colors", ColorBackend.from_shard(shard))
    # A second index holding only the circles, to check requests reach the index they name.
    only_circles = ColorBackend.from_shard(write_color_shard(tmp_path_factory.mktemp("circles"), shapes=("circle",)))
    registry = IndexRegistry([full, ServedIndex("circles", only_circles)])
    with TestClient(create_app(registry, serve_config())) as test_client:
        yield test_client


def keys(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["key"] for hit in response.json()["results"]]


def test_text_query_ranks_matching_images_first(client: TestClient) -> None:
    response = client.post("/search", json={"text": "a red circle", "k": 3})
    body = response.json()
    assert keys(response)[0] == "red_circle"
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert body["results"][1]["key"] == "red_square"  # shares the colour: cos = 1/2
    assert body["results"][1]["score"] == pytest.approx(0.5, abs=1e-5)
    assert [hit["rank"] for hit in body["results"]] == [1, 2, 3]
    assert body["results"][0]["caption"] == "a red circle"
    assert body["index"] == "colors" and body["query_type"] == "text" and body["modality"] == "image"


def test_image_url_serves_the_stored_image_bytes(client: TestClient) -> None:
    hit = client.post("/search", json={"text": "blue square", "k": 1}).json()["results"][0]
    assert hit["image_url"] == "/images/colors/blue_square"
    response = client.get(hit["image_url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    served = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert np.array_equal(served, np.asarray(draw("blue", "square")))
    assert client.get("/images/blue_square").content == response.content  # default index route


@pytest.mark.parametrize("color,shape", [("green", "circle"), ("purple", "square"), ("black", "circle")])
def test_base64_image_query_finds_that_image(client: TestClient, color: str, shape: str) -> None:
    payload = base64.b64encode(encode_png(draw(color, shape, size=48))).decode()
    assert keys(client.post("/search", json={"image": payload, "k": 2}))[0] == f"{color}_{shape}"


def test_data_url_and_jpeg_query(client: TestClient) -> None:
    buffer = io.BytesIO()
    draw("yellow", "square").save(buffer, format="JPEG", quality=95)
    url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert keys(client.post("/search", json={"image": url, "k": 1})) == ["yellow_square"]


def test_multipart_upload_query(client: TestClient) -> None:
    files = {"image": ("q.png", encode_png(draw("purple", "circle")), "image/png")}
    response = client.post("/search", files=files, data={"k": "4", "modality": "image"})
    assert keys(response)[0] == "purple_circle"
    assert len(response.json()["results"]) == 4
    assert response.json()["query_type"] == "image"


def test_form_encoded_text_query(client: TestClient) -> None:
    assert keys(client.post("/search", data={"text": "green square", "k": "1"})) == ["green_square"]


def test_embedding_query_is_normalised(client: TestClient) -> None:
    vector = [0.0] * DIM
    vector[list(COLORS).index("yellow")] = 5.0  # not unit length: the server normalises it
    response = client.post("/search", json={"embedding": vector, "k": 2})
    assert sorted(keys(response)) == ["yellow_circle", "yellow_square"]
    assert response.json()["results"][0]["score"] == pytest.approx(2 ** -0.5, abs=1e-5)


def test_text_modality_returns_captions(client: TestClient) -> None:
    response = client.post("/search", json={"text": "black", "k": 2, "modality": "text"})
    assert sorted(keys(response)) == ["black_circle", "black_square"]
    assert response.json()["modality"] == "text"
    assert {hit["caption"] for hit in response.json()["results"]} == {"a black circle", "a black square"}


def test_k_bounds_the_number_of_results(client: TestClient) -> None:
    assert len(keys(client.post("/search", json={"text": "red", "k": 5}))) == 5
    assert len(keys(client.post("/search", json={"text": "red", "k": 100}))) == 12  # whole index


def test_queries_reach_the_named_index(client: TestClient) -> None:
    assert keys(client.post("/search", json={"text": "red square", "k": 1, "index": "circles"})) == ["red_circle"]
    assert keys(client.post("/search", json={"text": "red square", "k": 1, "index": "colors"})) == ["red_square"]
    missing = client.post("/search", json={"text": "red", "index": "nope"})
    assert missing.status_code == 404
    assert "colors" in missing.json()["detail"] and "circles" in missing.json()["detail"]


def test_health_indices_and_docs(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["indices"] == 2
    indices = {info["name"]: info for info in client.get("/indices").json()}
    assert indices["colors"]["size"] == 12 and indices["circles"]["size"] == 6
    assert indices["colors"]["embed_dim"] == DIM and indices["colors"]["modalities"] == ["image", "text"]
    spec = client.get("/openapi.json").json()
    search_body = spec["paths"]["/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(search_body)
    assert "/images/{index}/{key}" in spec["paths"] and "/indices/{name}/add" in spec["paths"]
    docs = client.get("/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()  # works offline
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    assert "/docs/assets/redoc.standalone.js" in client.get("/redoc").text


def test_every_ref_in_the_openapi_spec_resolves(client: TestClient) -> None:
    answer = client.get("/openapi.json")
    spec = answer.json()
    refs = re.findall(r'"\$ref":\s*"([^"]*)"', answer.text)  # a "$ref" key at any depth of the spec
    assert refs  # the responses refer to component schemas
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"], ref
    add_items = spec["paths"]["/indices/{name}/add"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "key" in add_items["properties"]["items"]["items"]["properties"]


def test_page_and_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'id="query"' in page.text
    assert "renderResults" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200
