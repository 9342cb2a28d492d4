"""The service's config: limits and switches of the HTTP search service (`clipline serve`).

Every limit exists so that one client cannot make the server spend unbounded
memory or CPU: a request over a limit gets a 4xx with the limit in its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# How a browser on this machine names a server bound to loopback (IPv6 literals keep their brackets).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(kw_only=True)
class ServeLimits:
    """Bounds on what one request may ask for."""

    max_k: int = 100
    """Most results one query may ask for."""
    max_text_chars: int = 1000
    """Longest text query, in characters."""
    max_image_bytes: int = 8 * 1024 * 1024
    """Largest encoded image (after base64 decoding) a query may send."""
    max_image_pixels: int = 40_000_000
    """Largest decoded image (width x height); guards against decompression bombs."""
    max_body_bytes: int = 12 * 1024 * 1024
    """Largest request body; base64 makes an image about 4/3 of its bytes."""
    max_add_items: int = 10_000
    """Most items one `POST /indices/{name}/add` request may add."""
    max_added_rows: int = 10_000
    """Most rows all add requests together may add to one index while the server runs (they live in memory)."""


@dataclass(kw_only=True)
class ServeConfig:
    """How the service runs: limits, auth and batching."""

    limits: ServeLimits
    """Request size limits (see `ServeLimits`)."""
    api_key: str | None = None
    """If set, every API route except /health, /, /static and the docs needs it
    (header `X-API-Key`, `Authorization: Bearer`, or the page's cookie)."""
    batch_text: bool = True
    """Merge concurrent text queries into one encode + one index search."""
    max_batch: int = 64
    """Most queries merged into one batch."""
    batch_wait_ms: float = 0.0
    """How long the batcher waits for more queries after the first; 0 merges only
    the queries that arrived while the previous batch ran (no added latency)."""
    compute_threads: int = 2
    """Threads running encodes and index searches; more only fight over the cores."""
    allow_add: bool = False
    """Serve `POST /indices/{name}/add` (off unless asked for: it changes what every client sees)."""
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS
    """Host header values the server answers (Starlette's TrustedHostMiddleware; "*" = any). A page on another
    site whose name is rebound to this machine's address sends its own name and is refused."""
