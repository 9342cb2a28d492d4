"""Turn a search request (JSON or multipart) into a checked `ParsedQuery`.

Everything here treats the request as hostile: sizes are checked before work
is done, an image is opened with a whitelist of formats and its pixel count is
checked before it is decoded, vectors must be finite and of the index's size.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError

from retrieval.serve.api_schemas import SearchRequest
from retrieval.errors import RetrievalError
from retrieval.serve.config import ServeLimits

# Formats a query image may be in; the rest of Pillow's decoders stay unreachable.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
Schema = TypeVar("Schema", bound=BaseModel)


class BadQueryError(RetrievalError):
    """The request is well-formed JSON/multipart but its content is unusable (HTTP 400)."""


class QueryTooLargeError(RetrievalError):
    """A field or the body is over a configured limit (HTTP 413)."""


class QueryValidationError(RetrievalError):
    """The body does not match the schema (HTTP 422); the message lists the fields."""


@dataclass(kw_only=True)
class ParsedQuery:
    """A checked query; exactly one of `text`, `image_bytes`, `vector` is set."""

    kind: str  # "text" | "image" | "embedding"
    k: int
    modality: str
    index: str | None
    text: str | None = None
    image_bytes: bytes | None = None
    vector: np.ndarray | None = None  # (D,) float32, not yet checked against the index


def json_object(body: bytes, example: str) -> dict[str, Any]:
    """`body` parsed as a JSON object; BadQueryError for bad JSON, QueryValidationError showing `example` for
    any other JSON value."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise BadQueryError(f"body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(raw, dict):
        raise QueryValidationError(f"body must be a JSON object like {example}")
    return raw


def validated(schema: type[Schema], raw: dict[str, Any]) -> Schema:
    """`raw` checked against `schema`; QueryValidationError with one part per problem (at most five), without
    echoing the (possibly huge) input back."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ())) or 'body'}: {err.get('msg', 'invalid')}"
                 for err in exc.errors(include_input=False, include_url=False)[:5]]
        raise QueryValidationError("; ".join(parts)) from None


def parse_json_search(body: bytes, limits: ServeLimits) -> ParsedQuery:
    if not body:
        raise BadQueryError("empty body; send JSON like {\"text\": \"a cat\", \"k\": 10}")
    request = validated(SearchRequest, json_object(body, '{"text": "a cat", "k": 10}'))
    image_bytes = decode_base64(request.image, limits) if request.image is not None else None
    return _checked(request, image_bytes, limits)


def parse_form_search(fields: dict[str, Any], image_bytes: bytes | None, limits: ServeLimits) -> ParsedQuery:
    """A multipart query: an `image` file part (or a `text` field) plus k, modality, index."""
    unknown = set(fields) - {"text", "k", "modality", "index"}
    if unknown:
        raise QueryValidationError(f"unknown form field(s): {', '.join(sorted(unknown))}")
    raw: dict[str, Any] = {key: value for key, value in fields.items() if value != ""}
    if "k" in raw:  # form fields are strings; the JSON body's k must be an integer already
        if not str(raw["k"]).strip().isdigit():
            raise QueryValidationError(f"k: must be a whole number, got {str(raw['k'])[:20]!r}")
        raw["k"] = int(raw["k"])
    if image_bytes is not None:
        raw["image"] = ""  # placeholder so the one-of check counts the uploaded file
    request = validated(SearchRequest, raw)
    if image_bytes is not None and len(image_bytes) > limits.max_image_bytes:
        raise QueryTooLargeError(f"image is {len(image_bytes)} bytes; the limit is {limits.max_image_bytes}")
    return _checked(request, image_bytes, limits)


def _checked(request: SearchRequest, image_bytes: bytes | None, limits: ServeLimits) -> ParsedQuery:
    if request.k > limits.max_k:
        raise BadQueryError(f"k={request.k} is over the limit of {limits.max_k}")
    query = ParsedQuery(kind="", k=request.k, modality=request.modality, index=request.index)
    if request.text is not None:
        text = request.text.strip()
        if not text:
            raise BadQueryError("text is empty; type some words to search for")
        if len(text) > limits.max_text_chars:
            raise QueryTooLargeError(f"text has {len(text)} characters; the limit is {limits.max_text_chars}")
        query.kind, query.text = "text", text
    elif image_bytes is not None:
        if not image_bytes:
            raise BadQueryError("image is empty; send the image file's bytes")
        query.kind, query.image_bytes = "image", image_bytes
    else:
        query.kind, query.vector = "embedding", np.asarray(request.embedding, dtype=np.float64)
    return query


def decode_base64(value: str, limits: ServeLimits) -> bytes:
    """Bytes of a base64 string or `data:image/...;base64,` URL, checked against the size limit."""
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise BadQueryError("image data URL must be base64 (data:image/png;base64,...)")
    value = "".join(value.split())  # tolerate line breaks from `base64` tools
    if len(value) > (limits.max_image_bytes + 2) // 3 * 4:
        raise QueryTooLargeError(f"image is over the limit of {limits.max_image_bytes} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadQueryError("image is not valid base64; send the file's bytes base64-encoded") from None


def decode_image(data: bytes, limits: ServeLimits) -> Image.Image:
    """An RGB image from encoded bytes; BadQueryError if it is not a decodable image."""
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise QueryTooLargeError(f"image is {width}x{height} pixels; the limit is {limits.max_image_pixels} pixels")
        if width < 1 or height < 1:
            raise BadQueryError(f"image has no pixels ({width}x{height})")
        image.seek(0)  # first frame of an animation
        return image.convert("RGB")
    except RetrievalError:
        raise
    # Pillow raises many types on hostile input (OSError, ValueError, SyntaxError,
    # struct.error, IndexError, DecompressionBombError...); each means "not an image".
    except Exception as exc:  # noqa: BLE001
        raise BadQueryError(f"image could not be decoded ({type(exc).__name__}); "
                            "send a PNG, JPEG, WebP, GIF or BMP file") from None


def query_vector(values: np.ndarray, dim: int) -> np.ndarray:
    """(1, D) float32 unit vector from a client's embedding; BadQueryError if unusable."""
    if values.ndim != 1 or values.shape[0] != dim:
        raise BadQueryError(f"embedding has {values.shape[0]} values; this index needs {dim}")
    return unit_rows(values[None, :], "embedding is all zeros or not finite; send a non-zero vector")


def unit_rows(matrix: np.ndarray, error: str) -> np.ndarray:
    """(N, D) float32 unit rows of `matrix`; BadQueryError(`error`) if a row is all zeros or not finite."""
    scale = np.max(np.abs(matrix), axis=1, keepdims=True)
    if not np.all(np.isfinite(scale)) or np.any(scale == 0):
        raise BadQueryError(error)
    unit = matrix / scale  # divide by the largest entry first so squaring cannot overflow
    return (unit / np.linalg.norm(unit, axis=1, keepdims=True)).astype(np.float32)
