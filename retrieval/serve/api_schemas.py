"""Request and response bodies of the search API (they also make the OpenAPI spec).

Size bounds that depend on the server's limits are checked in `query_parsing`;
the bounds here are the absolute ones that keep parsing itself cheap.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

# Hard ceilings independent of the configured limits: a body past these is
# rejected by the schema before any work is done.
MAX_EMBEDDING_DIM = 8192
MAX_BASE64_CHARS = 64 * 1024 * 1024


class SearchRequest(BaseModel):
    """One query: exactly one of `text`, `image`, `embedding`."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="Text query, e.g. 'a red heart'.")
    image: str | None = Field(default=None, max_length=MAX_BASE64_CHARS,
                              description="Base64 image bytes (PNG/JPEG/WebP/...), optionally as a data: URL.")
    embedding: list[FiniteFloat] | None = Field(
        default=None, max_length=MAX_EMBEDDING_DIM,
        description="A query vector of the index's dimension (normalised by the server).")
    k: int = Field(default=10, ge=1, strict=True, description="Number of results (a JSON integer, not a string).")
    modality: Literal["image", "text"] = Field(default="image",
                                               description="Which side of the index to return: images or captions.")
    index: str | None = Field(default=None, max_length=200, description="Index name; default: the first served.")

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [name for name in ("text", "image", "embedding") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of 'text', 'image', 'embedding' (got {', '.join(given) or 'none'})")
        return self


class SearchHit(BaseModel):
    rank: int = Field(description="1 for the best match.")
    key: str
    score: float = Field(description="Cosine similarity between query and item.")
    caption: str
    image_url: str | None = Field(description="Where GET serves the stored image; null if none is stored.")


class SearchResponse(BaseModel):
    index: str
    modality: Literal["image", "text"]
    query_type: Literal["text", "image", "embedding"]
    k: int
    generation: int = Field(description="How many times the index was swapped since start.")
    results: list[SearchHit]


class AddItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=512)
    caption: str = Field(default="", max_length=10_000)
    image_embedding: list[FiniteFloat] | None = Field(default=None, max_length=MAX_EMBEDDING_DIM)
    text_embedding: list[FiniteFloat] | None = Field(default=None, max_length=MAX_EMBEDDING_DIM)


class AddRequest(BaseModel):
    """Rows to add; each needs an embedding for every side the index holds."""

    model_config = ConfigDict(extra="forbid")

    items: list[AddItem] = Field(min_length=1)


class AddResponse(BaseModel):
    index: str
    added: int
    size: int
    generation: int


class IndexInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    size: int
    embed_dim: int
    modalities: list[str]
    generation: int


class HealthResponse(BaseModel):
    status: Literal["ok"]
    indices: int
    uptime_s: float


class ErrorResponse(BaseModel):
    detail: str
