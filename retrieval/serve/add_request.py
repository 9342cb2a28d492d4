"""Parsing `POST /indices/{name}/add`: check an add request against the index it extends, turn it into `AddedItems`."""

from __future__ import annotations

import numpy as np

from retrieval.serve.api_schemas import AddItem, AddRequest
from retrieval.serve.query_parsing import BadQueryError, QueryTooLargeError, json_object, unit_rows, validated
from retrieval.serve.registry import AddedItems, SearchBackend


def parse_add_request(body: bytes, backend: SearchBackend, max_items: int) -> AddedItems:
    """AddedItems with unit-length float32 embeddings for each side `backend` holds."""
    raw = json_object(body, '{"items": [{"key": ..., ...}]}')
    if isinstance(raw.get("items"), list) and len(raw["items"]) > max_items:
        raise QueryTooLargeError(f"{len(raw['items'])} items in one request; the limit is {max_items}")
    request = validated(AddRequest, raw)
    keys = [item.key for item in request.items]
    if len(set(keys)) != len(keys):
        raise BadQueryError("the same key appears twice in one add request; keys must be unique")
    sides = {side: _side_matrix(request.items, side, backend.embed_dim) if side in backend.modalities else None
             for side in ("image", "text")}
    return AddedItems(keys=keys, captions=[item.caption for item in request.items],
                      image_embeddings=sides["image"], text_embeddings=sides["text"])


def _side_matrix(items: list[AddItem], side: str, dim: int) -> np.ndarray:
    """(N, D) float32 unit rows from each item's `<side>_embedding`."""
    field = f"{side}_embedding"
    rows = []
    for i, item in enumerate(items):
        values = getattr(item, field)
        if values is None:
            raise BadQueryError(f"items[{i}] has no {field}; this index holds {side} embeddings")
        if len(values) != dim:
            raise BadQueryError(f"items[{i}].{field} has {len(values)} values; this index needs {dim}")
        rows.append(values)
    return unit_rows(np.asarray(rows, dtype=np.float64), f"an item's {field} is all zeros; send non-zero vectors")
