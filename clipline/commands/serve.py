"""`clipline serve INDEX [INDEX2 ...]`: the HTTP search API and web page.

    clipline serve runs/emoji-index                       # http://127.0.0.1:8000
    clipline serve emoji=runs/emoji-index big=runs/1m --port 9000
    clipline serve runs/emoji-index --host 0.0.0.0 --api-key "$KEY"

INDEX is an index directory written by `clipline index build`; its name in the
API is the directory's name, or NAME in NAME=DIR. The encoder and every index
load once at start.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from clipline.commands.errors import reported_errors
from clipline.commands.model_choice import ModelChoiceConfig, encoder_spec
from clipline.flags import parse_config
from retrieval.errors import RetrievalError
from retrieval.serve.config import LOOPBACK_HOSTS, ServeConfig, ServeLimits
from retrieval.serve.guards import check_bind_safety, is_loopback_host

API_KEY_ENV = "CLIPLINE_API_KEY"
INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


@dataclass(kw_only=True)
class ServeCommandConfig:
    """Serve indices over HTTP: POST /search, GET /images/{index}/{key}, the page at /."""

    index: list[str]
    """Index directory, or NAME=DIR; several allowed."""
    host: str = "127.0.0.1"
    """Address to bind; anything but loopback needs --api-key (or --insecure)."""
    port: int = 8000
    """TCP port."""
    encoder: ModelChoiceConfig = field(default_factory=ModelChoiceConfig)
    """Encode queries with this --checkpoint RUN or --model NAME [--pretrained FILE] instead of the one each
    index was built with."""
    api_key: str | None = None
    """Key clients must send (X-API-Key header); default: $CLIPLINE_API_KEY if set."""
    insecure: bool = False
    """Allow a non-loopback --host without an API key."""
    batch_text: bool = True
    """Merge concurrent text queries into one encode and one index search."""
    max_batch: int = 64
    """Most text queries merged into one batch."""
    compute_threads: int = 2
    """Worker threads for encoding and index search (and text batches in flight)."""
    text_cache: int = 4096
    """Distinct query texts whose embeddings are remembered (least recently used dropped; 0 = off)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Query encoding: auto = bf16 autocast where the CPU runs it natively (as `clipline embed` chooses), else fp32."""
    max_k: int = 100
    """Most results a query may ask for."""
    max_text_chars: int = 1000
    """Longest text query."""
    max_image_mb: float = 8.0
    """Largest query image, in MiB."""
    allow_add: bool = False
    """Serve POST /indices/{name}/add (adding embeddings to a served index; with a key set, it needs the key)."""
    max_added_rows: int = 10_000
    """Most rows the add route may add to one index while the server runs (they are held in memory)."""
    allowed_hosts: list[str] | None = None
    """Host header values to answer (e.g. search.example.org); default: the --host name and, for a loopback
    --host, localhost / 127.0.0.1 / [::1]; any name for 0.0.0.0 or ::. Guards against DNS rebinding."""
    log_level: str = "info"
    """uvicorn log level (debug, info, warning, error)."""


def parse_index_arg(arg: str) -> tuple[str, Path]:
    """'NAME=DIR' or 'DIR' (named by its last path part) -> (name, dir)."""
    name, sep, path = arg.partition("=")
    if not sep:
        path, name = arg, Path(arg.rstrip("/")).name
    if not INDEX_NAME.match(name):
        raise RetrievalError(f"index name {name!r} is not usable in URLs; name it with NAME=DIR "
                             "(letters, digits, '_', '-', '.')")
    directory = Path(path)
    if not directory.is_dir():
        raise RetrievalError(f"index directory {directory} does not exist; build one with `clipline index build`")
    return name, directory


def allowed_hosts(host: str, given: list[str] | None) -> list[str]:
    """Host header values to answer for a server bound to `host` (see --allowed-hosts)."""
    if given:
        return list(given)
    if host in WILDCARD_BINDS:
        return ["*"]  # the names it is reached by are unknown here; the API key guards it (check_bind_safety)
    shown = f"[{host}]" if ":" in host else host
    return list(dict.fromkeys([shown, *(LOOPBACK_HOSTS if is_loopback_host(host) else ())]))


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), made before the slow loading so a busy port fails at once."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart without waiting
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise RetrievalError(f"cannot listen on {host}:{port} ({err.strerror or err}); another server may be using "
                             "that port: stop it or pass --port with a free one") from err
    return sock


def serve_config(cmd: ServeCommandConfig) -> ServeConfig:
    for flag in ("max_batch", "compute_threads", "max_k", "max_text_chars", "max_image_mb", "max_added_rows"):
        if getattr(cmd, flag) <= 0:
            raise RetrievalError(f"--{flag.replace('_', '-')} must be positive, got {getattr(cmd, flag)}")
    if cmd.text_cache < 0:
        raise RetrievalError(f"--text-cache must be >= 0 (0 turns it off), got {cmd.text_cache}")
    if not 0 <= cmd.port <= 65535:
        raise RetrievalError(f"--port {cmd.port} is not a TCP port (0-65535)")
    image_bytes = int(cmd.max_image_mb * 1024 * 1024)
    limits = ServeLimits(max_k=cmd.max_k, max_text_chars=cmd.max_text_chars, max_image_bytes=image_bytes,
                         max_body_bytes=image_bytes * 4 // 3 + 1024 * 1024, max_added_rows=cmd.max_added_rows)
    return ServeConfig(limits=limits, api_key=cmd.api_key, batch_text=cmd.batch_text, max_batch=cmd.max_batch,
                       compute_threads=cmd.compute_threads, allow_add=cmd.allow_add,
                       allowed_hosts=allowed_hosts(cmd.host, cmd.allowed_hosts))


def run_server(cmd: ServeCommandConfig) -> None:
    """Load every index once, then serve until interrupted."""
    # Every check before the slow loading, so that a refusal is quick.
    check_bind_safety(cmd.host, cmd.api_key, cmd.insecure)
    config = serve_config(cmd)
    named = [parse_index_arg(arg) for arg in cmd.index]
    sock = listening_socket(cmd.host, cmd.port)

    import uvicorn  # the server stack and the encoder load only once the arguments are valid

    from retrieval.serve.backend import load_registry
    from retrieval.serve.app import create_app
    from retrieval.serve.interpreter import freeze_loaded_objects
    from retrieval.serve.query_encoder import share_cores_between_workers

    print(f"serve: loading {len(named)} index(es)", file=sys.stderr)
    registry = load_registry(named, checkpoint=encoder_spec(cmd.encoder, required=False),
                             text_cache_size=cmd.text_cache, precision=cmd.precision)
    for served in registry:
        print(f"serve: {served.name}: {len(served.backend)} items from {served.source}; queries encoded in "
              f"{served.backend.precision}", file=sys.stderr)
    share_cores_between_workers(cmd.compute_threads)
    app = create_app(registry, config)
    freeze_loaded_objects()  # else each full garbage collection walks every loaded object, stalling all requests
    shown_host = f"[{cmd.host}]" if ":" in cmd.host else cmd.host
    print(f"serve: http://{shown_host}:{cmd.port}/  (API docs at /docs)", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, host=cmd.host, port=cmd.port, log_level=cmd.log_level,
                                           server_header=False, timeout_keep_alive=5, limit_concurrency=1024))
    server.run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with reported_errors("serve"):
        cmd = parse_config(ServeCommandConfig, argv, prog="clipline serve", description=__doc__.split("\n\n")[0],
                           flat=("encoder",), positional=("index",))
        run_server(replace(cmd, api_key=cmd.api_key or os.environ.get(API_KEY_ENV) or None))
