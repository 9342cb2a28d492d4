"""Load test of `clipline serve` on localhost: N concurrent clients of text queries for T seconds.

    flock /tmp/clipline-cpu.lock .venv/bin/python benchmarks/serve_load.py \
        emoji=INDEX_DIR [--tile-emb EMB --tile-n 1000000] [--clients 16] [--seconds 60] \
        [--peer-python /tmp/crvenv/bin/python]

--tile-emb builds (once, cached under --work) a second index of --tile-n
vectors from a real embedding dir (e.g. the emoji corpus): each row a real
embedding plus noise, keeping its key's image and caption, so the big index
is as servable as the small one (DESIGN.md: real embeddings tiled with noise).

Two query streams (benchmarks/query_streams.py): "repeated", drawn from 44
popular queries, so with the query-text cache on nearly every query skips the
text encoder; and "fresh", texts composed from word lists that never repeat,
so every query pays the encoder. For each index and stream it starts each
server in its own process (ours with micro-batching; on the repeated stream
also ours without batching, and --uncached ours with the cache off; and
clip-retrieval's Flask back end when --peer-python points at an environment
where clip-retrieval is installed, fed the same stream), waits for it,
warms it up, then runs the clients from this process with keep-alive
connections and reports queries/s, median, p99, p99.9 and max latency, errors, the
server's CPU ms per answer, and `x_peer`, our queries/s over the peer's on the same stream.
Configurations run back to back in one invocation so that their ratios are
comparable. Only 127.0.0.1 is ever contacted. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clipline.flags import parse_script_config  # noqa: E402
from figures import print_figures, timed  # noqa: E402  (benchmarks/figures.py: this script's folder)
from query_streams import FreshQueries, repeated_query  # noqa: E402  (this script's folder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def post_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    body: bytes) -> tuple[int, bool]:
    """One HTTP/1.1 POST: (status, whether the server keeps the connection open); the body is dropped."""
    writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, chunked, keep_alive = 0, False, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name.lower() == b"connection" and b"close" in value.lower():
            keep_alive = False  # e.g. Werkzeug's server: one request per connection
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status, keep_alive


async def run_clients(port: int, path: str, make_body, next_text, clients: int, seconds: float, seed: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                body = make_body(next_text(rng))
                start = time.perf_counter()
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    async with asyncio.timeout(60):  # no extra Task per request, as wait_for makes
                        status, keep_alive = await post_json(reader, writer, path, body)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors.append(type(exc).__name__)
                    if writer is not None:
                        writer.close()
                    writer = None
                    continue
                latencies.append(time.perf_counter() - start)  # connecting counts, as clients see it
                if status != 200:
                    errors.append(str(status))
                if not keep_alive:
                    writer.close()
                    writer = None
        finally:
            if writer is not None:
                writer.close()

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed, client_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    latencies.sort()
    return {
        "queries": len(latencies), "seconds": round(elapsed, 2),
        "queries_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms_median": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "latency_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1) if latencies else None,
        "latency_ms_p999": round(1000 * latencies[int(0.999 * (len(latencies) - 1))], 1) if latencies else None,
        "latency_ms_max": round(1000 * latencies[-1], 1) if latencies else None,
        "errors": len(errors), "error_kinds": sorted(set(errors))[:5],
        # the load generator shares the machine's cores with the server under test
        "client_cpu_ms_per_query": round(1000 * client_cpu / len(latencies), 3) if latencies else None,
    }


def wait_ready(port: int, process: subprocess.Popen, path: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see its stderr above")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                if b" 200 " in sock.recv(64):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become ready")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def measure(name: str, command: list[str], port: int, ready_path: str, query_path: str, make_body,
            args: BenchConfig, stream: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    try:
        _, load_s = timed(wait_ready, port, process, ready_path)
        # One fresh stream for warm-up and timed run, so that no text reaches this server twice.
        next_text = FreshQueries(seed=7) if stream == "fresh" else repeated_query
        asyncio.run(run_clients(port, query_path, make_body, next_text, args.clients, args.warmup, seed=99))
        cpu_before = process_cpu_seconds(process.pid)
        result = asyncio.run(run_clients(port, query_path, make_body, next_text, args.clients, args.seconds, seed=1))
        if cpu_before is not None and result["queries"]:
            # CPU the server spent per answer: steadier than queries/s when other work shares the cores
            result["server_cpu_ms_per_query"] = round(1000 * (process_cpu_seconds(process.pid) - cpu_before)
                                                      / result["queries"], 2)
        print(f"serve_load: {name}, {stream} queries: {result}", file=sys.stderr)
        return {"config": name, "queries_stream": stream, "startup_s": round(load_s, 1), **result}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def ours(name: str, index_dir: str, batch: bool, args: BenchConfig, text_cache: bool = True,
         stream: str = "repeated") -> dict:
    port = free_port()
    command = [sys.executable, "-m", "clipline", "serve", f"{name}={index_dir}", "--port", str(port),
               "--log-level", "warning", "--batch-text" if batch else "--no-batch-text",
               "--text-cache", "4096" if text_cache else "0", *args.serve_args]

    def body(text: str) -> bytes:
        return json.dumps({"text": text, "k": args.k, "index": name}).encode()

    label = "clipline (micro-batching)" if batch else "clipline (no batching)"
    if not text_cache:
        label = label[:-1] + ", no text cache)"
    return measure(label, command, port, "/health", "/search", body, args, stream)


def peer_runs(name: str, index_dir: str, args: BenchConfig, stream: str) -> list[dict]:
    """clip-retrieval's back end on `stream`: no run without --peer-python, an error row if its server fails."""
    if not args.peer_python:
        return []
    port, label = free_port(), "clip-retrieval back end (Flask)"
    command = [args.peer_python, str(REPO / "benchmarks" / "serve_load_peer.py"), name, index_dir, str(port)]

    def body(text: str) -> bytes:
        return json.dumps({"text": text, "modality": "image", "num_images": args.k, "indice_name": name,
                           "deduplicate": False, "use_mclip": False}).encode()

    try:
        return [measure(label, command, port, "/indices-list", "/knn-service", body, args, stream)]
    except RuntimeError as exc:
        return [{"config": label, "queries_stream": stream, "error": str(exc)}]


def add_peer_ratios(runs: list[dict]) -> None:
    """Each of our runs gets `x_peer`: its queries/s over the peer's on the same query stream."""
    peers = {r["queries_stream"]: r for r in runs if r["config"].startswith("clip-retrieval") and "error" not in r}
    for run in runs:
        base = peers.get(run["queries_stream"])
        if base and base is not run and base["queries_per_s"] and "queries_per_s" in run:
            run["x_peer"] = round(run["queries_per_s"] / base["queries_per_s"], 2)


def tiled_index(emb_dir: str, n: int, noise: float, work: Path) -> Path:
    """An index of n noisy copies of the rows of `emb_dir`, built by `build_index` (cached)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from retrieval.embedding_store import EmbeddingSet
    from retrieval.index.build import IndexBuildConfig, build_index
    from retrieval.recorded_paths import rebased

    out_emb, out_index = work / f"emb-{n}", work / f"index-{n}"
    if (out_index / "summary.json").is_file():
        return out_index
    emb = EmbeddingSet(emb_dir)
    image = np.concatenate(list(emb.batches("image")))  # (M, D)
    text = np.concatenate(list(emb.batches("text")))
    meta = pa.concat_tables([pq.read_table(f) for f in emb.metadata_files()])
    rng = np.random.default_rng(0)
    for folder in ("img_emb", "text_emb", "metadata"):
        (out_emb / folder).mkdir(parents=True, exist_ok=True)
    part_rows = 125_000
    for p, start in enumerate(range(0, n, part_rows)):
        rows = rng.integers(0, len(image), min(part_rows, n - start))
        for folder, base in (("img_emb", image), ("text_emb", text)):
            x = base[rows] + noise * rng.standard_normal((len(rows), base.shape[1]), dtype=np.float32) / base.shape[1] ** 0.5
            np.save(out_emb / folder / f"part_{p:05d}.npy", (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
        part = meta.take(pa.array(rows))
        keys = pa.array([f"{k}~{start + i}" for i, k in enumerate(part["key"].to_pylist())])
        pq.write_table(part.set_column(part.schema.get_field_index("key"), "key", keys),
                       out_emb / "metadata" / f"part_{p:05d}.parquet")
    info = rebased(emb.info, emb.root, out_emb)  # its paths are recorded relative to the embedding dir
    (out_emb / "info.json").write_text(json.dumps({**info, "count": n, "tiled_from": str(emb_dir), "noise": noise}))
    build_index(IndexBuildConfig(emb=str(out_emb), out=str(out_index), modality="image", overwrite=True),
                log=lambda m: print(f"serve_load: {m}", file=sys.stderr, flush=True))
    return out_index


@dataclass(kw_only=True)
class BenchConfig:
    """Load test: clients sending text queries to our server and to clip-retrieval's back end."""

    indices: list[str]
    """NAME=INDEX_DIR, one per index to load-test."""
    clients: int = 16
    """Concurrent clients."""
    seconds: float = 60.0
    """Timed seconds per server."""
    warmup: float = 5.0
    """Untimed seconds first."""
    k: int = 10
    """Results per query."""
    peer_python: str | None = None
    """Python of a venv with clip-retrieval installed."""
    unbatched: bool = True
    """Also run without micro-batching (--no-unbatched skips it)."""
    uncached: bool = False
    """Also run the repeated queries with the query-text cache off (--uncached)."""
    repeated: bool = True
    """Run the stream drawn from 44 popular queries (nearly all cache hits; --no-repeated skips it)."""
    fresh: bool = True
    """Run a stream of never-repeated queries, ours and the peer's (--no-fresh skips it): every query pays
    the text encoder, whatever the cache."""
    serve_args: list[str] = field(default_factory=list)
    """Extra `clipline serve` flags for our server (e.g. --serve-args='["--precision", "fp32"]')."""
    tile_emb: str | None = None
    """Embedding dir to tile into a big index (see above)."""
    tile_n: int = 1_000_000
    """Rows of the tiled index."""
    tile_noise: float = 0.5
    """Noise norm relative to the unit rows."""
    work: str = "/tmp/clipline_serve_load"
    """Working directory."""


def main() -> None:
    args = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/serve_load.py",
                        description=__doc__.split("\n\n")[0], positional=("indices",))
    if args.clients > 64 or args.seconds > 600:
        raise SystemExit("serve_load.py: error: --clients is at most 64 and --seconds at most 600 (bounded by design)")

    import torch
    from machine import machine_info  # benchmarks/machine.py (this script's folder is on sys.path)

    results: dict[str, list[dict]] = {}
    sizes: dict[str, dict] = {}
    specs = list(args.indices)
    if args.tile_emb:
        big = tiled_index(args.tile_emb, args.tile_n, args.tile_noise, Path(args.work))
        specs.append(f"tiled{args.tile_n}={big}")
    for spec in specs:
        name, _, index_dir = spec.partition("=")
        summary = json.loads((Path(index_dir) / "summary.json").read_text())
        sizes[name] = {m: {"count": s["count"], "factory": s["factory"], "params": s.get("params")} for m, s in summary.items()}
        runs = []
        if args.repeated:
            runs.append(ours(name, index_dir, True, args))
            if args.uncached:  # the clients repeat 44 queries, so the cache answers nearly all
                runs.append(ours(name, index_dir, True, args, text_cache=False))
            if args.unbatched:
                runs.append(ours(name, index_dir, False, args))
            runs += peer_runs(name, index_dir, args, "repeated")
        if args.fresh:
            runs.append(ours(name, index_dir, True, args, stream="fresh"))
            runs += peer_runs(name, index_dir, args, "fresh")
        add_peer_ratios(runs)
        results[name] = runs
    print_figures({
        "benchmark": "serve_load", "clients": args.clients, "seconds": args.seconds, "k": args.k,
        "indices": sizes, "results": results,
        "machine": machine_info(("torch", "faiss-cpu", "fastapi", "uvicorn"), threads=torch.get_num_threads()),
        "note": "clients run in this process on the same cores as the server",
    }, indent=None)


if __name__ == "__main__":
    main()
