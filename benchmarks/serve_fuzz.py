"""Fuzz the search server's request parsing: count requests tried and 5xx answers (must be 0).

    flock /tmp/clipline-cpu.lock .venv/bin/python benchmarks/serve_fuzz.py INDEX [--cases 20000] [--seconds 300]

Serves INDEX with uvicorn on a free loopback port (in this process, one
thread) and sends mutated requests over real HTTP: valid bodies with fields
dropped, retyped, resized or corrupted; random and truncated bytes under
various Content-Types; multipart uploads of bit-flipped images; image paths
with traversal tries; add requests; and raw malformed HTTP on a socket.
Every answer must be < 500 and, if 4xx, JSON with a `detail` message. Prints
one JSON object.
"""

from __future__ import annotations

import base64
import io
import json
import platform
import random
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable
from urllib.parse import quote

import httpx
import uvicorn
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipline.flags import parse_script_config  # noqa: E402
from figures import print_figures  # noqa: E402  (benchmarks/figures.py: this script's folder)
from retrieval.serve.config import ServeConfig, ServeLimits  # noqa: E402
from retrieval.serve.backend import load_registry  # noqa: E402
from retrieval.serve.app import create_app  # noqa: E402

WEIRD_STRINGS = ["", " ", "\x00", "\u202e", "🙂" * 50, "../../etc/passwd", "%2e%2e%2f", "a" * 5000, "null",
                 "<script>alert(1)</script>", "\\", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
                 "data:image/png;base64,", "1e309", "NaN", "-1", "0x10"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-16", "text/plain", "", "multipart/form-data",
                 "multipart/form-data; boundary=", "multipart/form-data; boundary=zz", "application/x-www-form-urlencoded",
                 "application/xml", "image/png", "application/json;;;", "APPLICATION/JSON"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    makers = (  # one drawn uniformly; a maker listed twice is drawn twice as often
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, -1, 1, 2**31, 2**63, -(2**63), 10**40, rng.randrange(-1000, 1000)]),
        lambda: rng.choice([0.0, -0.0, 1e-320, 1e308, -1e308, rng.uniform(-1e6, 1e6)]),
        lambda: rng.choice(WEIRD_STRINGS),
        lambda: rng.choice(WEIRD_STRINGS),
        lambda: "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(0, 40))),
        lambda: rng.choice(["red", "a cat", "image", "text", "emoji"]),
        # nested values last: from depth 3 on only the eight leaf makers above are drawn
        lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))],
        lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))],
        lambda: {rng.choice(["text", "k", "x", ""]): random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))},
        lambda: [[[[]]]],
    )
    return makers[rng.randrange(12 if depth < 3 else 8)]()


class RequestFuzzer:
    """Makes one mutated request per call: (method, path, headers, body bytes or files)."""

    def __init__(self, rng: random.Random, index: str, dim: int, keys: list[str], sample_png: bytes) -> None:
        self.rng, self.index, self.dim, self.keys, self.png = rng, index, dim, keys, sample_png

    def valid_search(self) -> dict:
        rng = self.rng
        choice = rng.randrange(3)
        body: dict[str, Any] = {"k": rng.randrange(1, 20), "modality": rng.choice(["image", "text"]), "index": self.index}
        if choice == 0:
            body["text"] = rng.choice(["a red heart", "smiling face", "cat", "flag"])
        elif choice == 1:
            body["image"] = base64.b64encode(self.png).decode()
        else:
            body["embedding"] = [rng.gauss(0, 1) for _ in range(self.dim)]
        return body

    def mutated_json(self) -> tuple[str, str, dict, bytes]:
        rng, body = self.rng, self.valid_search()
        for _ in range(rng.randrange(1, 4)):
            if not isinstance(body, dict):
                break
            action = rng.randrange(7)
            field = rng.choice(["text", "image", "embedding", "k", "modality", "index", "extra"])
            if action == 0:
                body.pop(field, None)
            elif action == 1:
                body[field] = random_value(rng)
            elif action == 2 and "embedding" in body:
                body["embedding"] = [rng.gauss(0, 1) for _ in range(rng.choice([0, 1, self.dim - 1, self.dim + 1, 9000]))]
            elif action == 3:
                body["image"] = base64.b64encode(self.corrupt(self.png)).decode()
            elif action == 4:
                body["k"] = rng.choice([0, -5, 10**9, 1.5, "10", True, None])
            elif action == 5:
                body["text"] = rng.choice(WEIRD_STRINGS) * rng.choice([1, 3, 300])
            else:
                body = random_value(rng)  # not even an object
        data = json.dumps(body, allow_nan=True).encode()
        return "POST", "/search", {"content-type": "application/json"}, data

    def corrupt(self, data: bytes) -> bytes:
        rng = self.rng
        mode = rng.randrange(4)
        if mode == 0:
            return data[: rng.randrange(len(data))]
        if mode == 1:
            buf = bytearray(data)
            for _ in range(rng.randrange(1, 20)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            return bytes(buf)
        if mode == 2:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2000)))
        return data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))

    def raw_body(self) -> tuple[str, str, dict, bytes]:
        rng = self.rng
        base = json.dumps(self.valid_search()).encode()
        body = rng.choice([self.corrupt(base), base[: rng.randrange(len(base))], b"", b"\xff\xfe\x00",
                           b"[" * rng.randrange(1, 50000), b'{"text": "a"}' * 3, base + b"garbage"])
        return "POST", "/search", {"content-type": rng.choice(CONTENT_TYPES)}, body

    def multipart(self) -> tuple[str, str, dict, Any]:
        rng = self.rng
        files = {rng.choice(["image", "image", "file", ""]): ("q.png", self.corrupt(self.png) if rng.random() < 0.7
                                                             else self.png, rng.choice(["image/png", "text/plain"]))}
        data = {key: str(random_value(rng)) for key in rng.sample(["k", "modality", "index", "text", "zzz"], rng.randrange(0, 3))}
        return "POST", "/search", {"files": files, "data": data}, None

    def image_path(self) -> tuple[str, str, dict, bytes]:
        rng = self.rng
        key = rng.choice([*self.keys[:5], *WEIRD_STRINGS[1:8], "..%2F..%2Fetc%2Fpasswd", "%00", "00000.tar",
                          "dataset.json", "..", "%2e%2e", "~", "a/b", "%2F"])
        index = rng.choice([self.index, "..", "%2e%2e", "nope", ""])
        safe = "%/.~"  # keep the fuzzer's own escapes and slashes; encode what httpx would refuse
        return "GET", f"/images/{quote(index, safe=safe)}/{quote(key, safe=safe)}", {}, b""

    def add(self) -> tuple[str, str, dict, bytes]:
        rng = self.rng
        item = {"key": f"fuzz-{rng.randrange(10**9)}", "caption": random_value(rng),
                "image_embedding": [rng.gauss(0, 1) for _ in range(rng.choice([self.dim, self.dim, 3]))],
                "text_embedding": [rng.gauss(0, 1) for _ in range(rng.choice([self.dim, self.dim, 0]))]}
        if rng.random() < 0.5:
            item[rng.choice(list(item))] = random_value(rng)
        body = rng.choice([{"items": [item]}, {"items": item}, {"items": []}, item, random_value(rng)])
        return "POST", f"/indices/{rng.choice([self.index, 'nope', '..'])}/add", {"content-type": "application/json"}, \
            json.dumps(body).encode()

    def other_route(self) -> tuple[str, str, dict, bytes]:
        rng = self.rng
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST"])
        path = rng.choice(["/", "/search", "/indices", "/health", "/docs", "/openapi.json", "/static/app.js",
                           "/static/../app.py", "/static/%2e%2e/app.py", "/" + "a" * 3000, "/images", "/images/"])
        return method, path, {}, b""

    def next(self) -> tuple[str, str, Callable]:
        makers = [(self.mutated_json, 35), (self.raw_body, 20), (self.multipart, 15), (self.image_path, 12),
                  (self.add, 8), (self.other_route, 10)]
        maker = self.rng.choices([m for m, _ in makers], weights=[w for _, w in makers])[0]
        return maker.__name__, *maker()


RAW_HTTP = [b"GET / HTTP/1.1\r\n\r\n", b"GARBAGE\r\n\r\n", b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 5000 + b"\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]


def raw_http_status(port: int, payload: bytes) -> int | None:
    """Status code of a raw request, None if the server closed without answering (also fine)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(payload)
            answer = sock.recv(64)
        except OSError:
            return None
    parts = answer.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else None


@dataclass(kw_only=True)
class BenchConfig:
    """Mutated and malformed requests against the server: no answer may be a 5xx."""

    index: str
    """Index directory (or NAME=DIR)."""
    cases: int = 20_000
    """Mutated requests to send."""
    seconds: float = 300.0
    """Stop after this long."""
    seed: int = 0
    """Seed of the mutations."""


def main() -> None:
    args = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/serve_fuzz.py",
                        description=__doc__.split("\n\n")[0], positional=("index",))

    from clipline.commands.serve import listening_socket, parse_index_arg

    registry = load_registry([parse_index_arg(args.index)])
    served = next(iter(registry))
    # Small limits so that "over the limit" paths are hit often without huge bodies.
    limits = ServeLimits(max_k=50, max_text_chars=500, max_image_bytes=300_000, max_body_bytes=500_000, max_add_items=10)
    app = create_app(registry, ServeConfig(limits=limits))
    sock = listening_socket("127.0.0.1", 0)  # as `clipline serve` makes it (proto TCP: asyncio sets NODELAY)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    keys = [hit["key"] for hit in served.backend.search_embedding(
        __import__("numpy").ones((1, served.backend.embed_dim), "float32") / served.backend.embed_dim ** 0.5, 10, "image")[0]]
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(png, format="PNG")
    fuzzer = RequestFuzzer(random.Random(args.seed), served.name, served.backend.embed_dim, keys, png.getvalue())
    statuses: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    server_errors: list[str] = []
    no_detail, tried, started = 0, 0, time.monotonic()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        while tried < args.cases and time.monotonic() - started < args.seconds:
            kind, method, path, headers, body = fuzzer.next()
            if "files" in headers:
                response = client.request(method, path, files=headers["files"], data=headers["data"])
            else:
                response = client.request(method, path, headers=headers, content=body)
            tried += 1
            statuses[response.status_code] += 1
            by_kind.setdefault(kind, Counter())[f"{response.status_code // 100}xx"] += 1
            if response.status_code >= 500:
                server_errors.append(f"{kind} {method} {path[:80]} -> {response.status_code} {response.text[:200]}")
            elif 400 <= response.status_code < 500 and method != "HEAD":
                try:
                    no_detail += not response.json().get("detail")
                except ValueError:
                    no_detail += 1
    raw = [raw_http_status(port, payload) for payload in RAW_HTTP]
    healthy = httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    server.should_exit = True
    print_figures({
        "benchmark": "serve_fuzz", "index": served.name, "index_size": len(served.backend),
        "tried": tried, "seconds": round(time.monotonic() - started, 1),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "by_generator": {k: {str(s): n for s, n in sorted(v.items())} for k, v in by_kind.items()},
        "server_errors_5xx": len(server_errors), "first_5xx": server_errors[:5], "4xx_without_detail": no_detail,
        "raw_http_statuses": raw, "raw_http_5xx": sum(1 for s in raw if s is not None and s >= 500),
        "healthy_after": healthy, "python": platform.python_version(), "fastapi": __import__("fastapi").__version__,
        "uvicorn": uvicorn.__version__,
    }, indent=None)


if __name__ == "__main__":
    main()
