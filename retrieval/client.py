"""A small Python client for `clipline serve` (standard library only).

    from retrieval.client import SearchClient
    client = SearchClient("http://127.0.0.1:8000")
    for hit in client.search_text("a red heart", k=5):
        print(hit["score"], hit["key"], hit["caption"], hit["image_url"])
    hits = client.search_image("query.png", k=5)              # path, bytes or PIL image
    png = client.image_bytes(hits[0]["image_url"])
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from retrieval.errors import RetrievalError


class SearchClientError(RetrievalError):
    """The server answered with an error (`status`, `detail`) or could not be reached (status 0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


class SearchClient:
    """Calls a clipline search server; each search returns the list of hits (dicts)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def search_text(self, text: str, k: int = 10, modality: str = "image", index: str | None = None) -> list[dict]:
        return self.search({"text": text, "k": k, "modality": modality, "index": index})["results"]

    def search_image(self, image: Any, k: int = 10, modality: str = "image", index: str | None = None) -> list[dict]:
        """`image`: a file path, encoded bytes, or a PIL image."""
        payload = base64.b64encode(_image_bytes(image)).decode("ascii")
        return self.search({"image": payload, "k": k, "modality": modality, "index": index})["results"]

    def search_embedding(self, vector: Sequence[float], k: int = 10, modality: str = "image",
                         index: str | None = None) -> list[dict]:
        values = [float(v) for v in vector]
        return self.search({"embedding": values, "k": k, "modality": modality, "index": index})["results"]

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /search with a raw body; the whole response (index, generation, results)."""
        answer = self._call("POST", "/search", {key: value for key, value in body.items() if value is not None})
        for hit in answer["results"]:
            if hit.get("image_url"):
                hit["image_url"] = self.url + hit["image_url"]
        return answer

    def image_bytes(self, image_url_or_key: str, index: str | None = None) -> bytes:
        """The stored image of a hit: pass its `image_url`, or a key (and index name)."""
        if image_url_or_key.startswith(("http://", "https://")):
            return self._call("GET", image_url_or_key[len(self.url):], raw=True)
        parts = [index] if index else []
        path = "/images/" + "/".join(urllib.parse.quote(p, safe="") for p in [*parts, image_url_or_key])
        return self._call("GET", path, raw=True)

    def indices(self) -> list[dict]:
        return self._call("GET", "/indices")

    def health(self) -> dict:
        return self._call("GET", "/health")

    def add(self, index: str, items: list[dict]) -> dict:
        """Add rows ({key, caption, image_embedding, text_embedding}) to a served index."""
        return self._call("POST", f"/indices/{urllib.parse.quote(index, safe='')}/add", {"items": items})

    def _call(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise SearchClientError(exc.code, _detail(exc.read())) from None
        except urllib.error.URLError as exc:
            raise SearchClientError(0, f"cannot reach {self.url}: {exc.reason}") from None
        return payload if raw else json.loads(payload)


def _detail(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("detail", payload[:200]))
    except (ValueError, AttributeError):
        return payload[:200].decode("utf-8", "replace")


def _image_bytes(image: Any) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if hasattr(image, "save"):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(f"image must be a path, bytes or a PIL image, not {type(image).__name__}")
