"""The FastAPI app of `clipline serve` and its routes: `create_app(registry, config)`.

Routes: `POST /search`, `GET /images/{index}/{key}`, `GET /indices`,
`POST /indices/{name}/add` (only with `allow_add`), `GET /health`, the page at
`/`, docs at `/docs`. Requests whose Host header is not an allowed host are
refused first (DNS rebinding).
CPU work (decoding, encoding, index search, shard reads) runs in worker
threads bounded by one limiter, never on the event loop.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable
from urllib.parse import quote

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile

from retrieval.serve.api_schemas import (
    AddRequest, AddResponse, ErrorResponse, HealthResponse, IndexInfo, SearchRequest, SearchResponse,
)
from retrieval.serve.add_request import parse_add_request
from retrieval.serve.query_parsing import (
    BadQueryError, ParsedQuery, QueryValidationError, decode_image, parse_form_search, parse_json_search,
    query_vector,
)
from retrieval.serve.config import ServeConfig
from retrieval.serve.error_responses import UnsupportedMediaError, install_error_handlers
from retrieval.serve.guards import ApiKeyGuard, BodySizeLimit, SecurityHeaders, TrustedHosts
from retrieval.serve.registry import IndexRegistry, ServedIndex, UnknownKeyError
from retrieval.serve.shard_images import ShardImageReader, media_type_of
from retrieval.serve.text_batcher import TextSearchBatcher

STATIC_DIR = Path(__file__).parent / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'")
ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse} for c in (400, 401, 404, 413, 415, 422)}
IMAGE_RESPONSES = {**ERRORS, 200: {"content": {"image/*": {}}}}
JSON_PARSE_INLINE_BYTES = 64 * 1024  # bigger bodies (base64 images) are parsed in a worker thread


def inline_schema(model: type) -> dict:
    """A model's JSON schema with its `$defs` substituted in place, so it can sit inside the spec."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


SEARCH_BODY_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": inline_schema(SearchRequest)},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary"}, "text": {"type": "string"},
        "k": {"type": "integer", "minimum": 1}, "modality": {"type": "string", "enum": ["image", "text"]},
        "index": {"type": "string"}}}},
}}}
ADD_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(AddRequest)}}}}


class SearchService:
    """What the routes share: the indices, the limits, the batcher and the worker-thread limiter."""

    def __init__(self, registry: IndexRegistry, config: ServeConfig) -> None:
        self.registry, self.config, self.limits = registry, config, config.limits
        self.limiter = anyio.CapacityLimiter(config.compute_threads)
        self.batcher = TextSearchBatcher(self.limiter, max_batch=config.max_batch, wait_s=config.batch_wait_ms / 1000,
                                         workers=config.compute_threads)
        self.reader = ShardImageReader()
        self.started = time.monotonic()

    async def in_thread(self, fn: Callable, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def search(self, query: ParsedQuery) -> dict:
        served = self.registry.get(query.index)
        snapshot = served.snapshot()  # this query uses one snapshot, whatever swaps happen meanwhile
        backend, k, modality = snapshot.backend, query.k, query.modality
        if modality not in backend.modalities:
            raise BadQueryError(f"index {served.name!r} has no {modality} side; use modality "
                                f"{' or '.join(backend.modalities)}")
        generation = snapshot.generation
        if query.kind == "text" and self.config.batch_text:
            generation, hits = await self.batcher.search(served, query.text, k, modality)
        elif query.kind == "text":
            hits = await self.in_thread(lambda: backend.search_text([query.text], k, modality)[0])
        elif query.kind == "image":
            hits = await self.in_thread(
                lambda: backend.search_image([decode_image(query.image_bytes, self.limits)], k, modality)[0])
        else:
            vector = query_vector(query.vector, backend.embed_dim)
            hits = await self.in_thread(lambda: backend.search_embedding(vector, k, modality)[0])
        return search_response(served, query, generation, hits)

    async def image(self, index: str, key: str) -> Response:
        location = self.registry.get(index).backend.image_location(key)  # the key is looked up, never a path
        if location is None:
            raise UnknownKeyError(f"index {index!r} has no stored image for key {key!r}")
        media_type = media_type_of(location.member)
        data = await self.in_thread(self.reader.read, location)
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    async def add(self, name: str, body: bytes) -> AddResponse:
        served = self.registry.get(name)
        items = await self.in_thread(parse_add_request, body, served.backend, self.limits.max_add_items)
        # builds the new snapshot aside, then swaps
        snapshot = await self.in_thread(served.add, items, self.limits.max_added_rows)
        return AddResponse(index=name, added=len(items.keys), size=len(snapshot.backend),
                           generation=snapshot.generation)


def create_app(registry: IndexRegistry, config: ServeConfig) -> FastAPI:
    """The app serving `registry`; limits, auth and batching from `config`."""
    # Swagger UI and ReDoc from files shipped in fastapi-offline (the stock pages load them from a CDN).
    app = FastAPIOffline(title="clipline search", version="1", static_url="/docs/assets",
                         description="Text and image search over clipline indices.")
    service = SearchService(registry, config)
    app.state.service = service
    _add_page_routes(app, service)
    _add_search_routes(app, service)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    # Added last = outermost: oversized bodies and missing keys are refused before any route runs.
    if config.api_key:
        app.add_middleware(ApiKeyGuard, api_key=config.api_key)
    app.add_middleware(BodySizeLimit, max_body_bytes=config.limits.max_body_bytes)
    app.add_middleware(TrustedHosts, allowed_hosts=list(config.allowed_hosts))  # outermost: before anything runs
    return app


def _add_page_routes(app: FastAPI, service: SearchService) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        return HealthResponse(status="ok", indices=len(service.registry.names()),
                              uptime_s=time.monotonic() - service.started)

    @app.get("/indices", response_model=list[IndexInfo], responses=ERRORS)
    async def indices() -> list[dict]:
        return [served.describe() for served in service.registry]


def _add_search_routes(app: FastAPI, service: SearchService) -> None:
    @app.post("/search", response_model=SearchResponse, responses=ERRORS, openapi_extra=SEARCH_BODY_DOC)
    async def search(request: Request) -> Response:
        """Query by `text`, base64 `image` or `embedding` (JSON), or upload an image (multipart)."""
        answer = await service.search(await read_query(request, service))
        # Serialised here, not through the response model: the hits are built to its schema already, and
        # validating and encoding them through pydantic cost more than the index search on a 1M index.
        return Response(json.dumps(answer, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(),
                        media_type="application/json")

    @app.get("/images/{index}/{key}", responses=IMAGE_RESPONSES)
    async def image(index: str, key: str) -> Response:
        """The stored image of `key` in `index`, read from the index's shards."""
        return await service.image(index, key)

    @app.get("/images/{key}", responses=IMAGE_RESPONSES)
    async def default_image(key: str) -> Response:
        """The stored image of `key` in the default (first) index."""
        return await service.image(service.registry.default_name, key)

    if service.config.allow_add:
        @app.post("/indices/{name}/add", response_model=AddResponse, openapi_extra=ADD_BODY_DOC,
                  responses={**ERRORS, 409: {"model": ErrorResponse}})
        async def add(name: str, request: Request) -> AddResponse:
            """Add rows (key, caption, embeddings); the new index is built aside and swapped in atomically."""
            if media_type(request) != "application/json":
                raise UnsupportedMediaError("send the rows as JSON with Content-Type: application/json "
                                            f"(got {media_type(request) or 'none'!r})")
            return await service.add(name, await request.body())


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_query(request: Request, service: SearchService) -> ParsedQuery:
    """The checked query of a JSON, multipart or url-encoded search request."""
    limits, kind = service.limits, media_type(request)
    if kind == "application/json":
        body = await request.body()
        if len(body) <= JSON_PARSE_INLINE_BYTES:
            return parse_json_search(body, limits)
        return await service.in_thread(parse_json_search, body, limits)
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=8, max_part_size=4 * limits.max_text_chars + 1024)
        fields, image_bytes = {}, None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "image":
                    raise QueryValidationError(f"upload the file as the form field 'image' (got {name!r})")
                image_bytes = await value.read(limits.max_image_bytes + 1)
            else:
                fields[name] = value
        return parse_form_search(fields, image_bytes, limits)
    raise UnsupportedMediaError("send Content-Type: application/json (text, image as base64, or embedding) "
                                f"or multipart/form-data (image file upload); got {kind or 'none'!r}")


def search_response(served: ServedIndex, query: ParsedQuery, generation: int, hits: list[dict]) -> dict:
    """The `SearchResponse` of `hits`, as the plain dict it serialises to."""
    index_part = quote(served.name, safe="")
    results = [
        {"rank": rank, "key": hit["key"], "score": float(hit["score"]), "caption": hit.get("caption") or "",
         "image_url": f"/images/{index_part}/{quote(hit['key'], safe='')}" if hit.get("has_image") else None}
        for rank, hit in enumerate(hits, start=1)
    ]
    return {"index": served.name, "modality": query.modality, "query_type": query.kind, "k": query.k,
            "generation": generation, "results": results}
