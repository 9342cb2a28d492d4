"""Prototype, not product code: an index's lists scored exactly in int8 on AMX tiles, beside faiss's fast scan.

Measures one design alternative for the index's scan on CPUs with AMX (Intel
Xeon, 4th generation or later), where `IndexFlatIP`'s fp32 BLAS is fast enough that
faiss's 4-bit fast scan stays under 50x it at 256-d, noise 1.0 (README, "for
the next engineer"). Same built index, same lists, same nprobe, same held-out
queries and exact baseline as `index_bench.py`; only the scan differs:

- each vector as int8 codes with one float scale (~260 MB at 1M x 256, beside
  the index's float32 re-ranking vectors), laid out per list in blocks of 16;
- the queries of a batch grouped by the lists they probe (faiss's coarse
  quantiser), up to 16 at a time as one AMX tile against each block of the
  list, so that a list is read once per batch (`amx_ivf_scan.c`);
- each query's `--candidates` best kept per thread, then scored exactly in
  float32 (the embeddings' vectors, as the index's re-ranking holds them) and
  the best 10 returned.

Run `index_bench.py ... --sweep '' --work DIR` first (it leaves DIR/emb_NOISE
and DIR/index_NOISE of its one level), then this script with the same
arguments. Needs Linux on x86 with AMX (`amx_int8`) and gcc, and says so in one
line otherwise. Prints one JSON object: recall@10 and batched q/s of both scans
and of flat, where the prototype's time goes, and how often its 10 ids are
exactly those of an `IndexIVFFlat` over the same lists at the same nprobe.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# faiss's OpenMP runtime and the kernel's (gcc's libgomp) are two runtimes in one process; with their default
# spinning they take the 2 cores from each other between calls (prototype scan 24.1k-31.2k q/s against 31.7k-32.6k)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from clipline.flags import parse_script_config  # noqa: E402
from retrieval.embedding_store import EmbeddingSet  # noqa: E402
from retrieval.index.store import load_index  # noqa: E402
from retrieval.index.tune import recall_at_k  # noqa: E402
from figures import print_figures  # noqa: E402  (benchmarks/figures.py, this script's folder)
from index_bench import (  # noqa: E402
    K, TIMED_PASSES, BenchConfig, best_batched, held_out_queries, real_base, synthetic_base)
from machine import machine_info  # noqa: E402

SOURCE = Path(__file__).with_name("amx_ivf_scan.c")
BLOCK = 16  # vectors per block: one AMX tile's columns


@dataclass(kw_only=True)
class ScanConfig(BenchConfig):
    """index_bench.py's arguments (the same --work, data and noise), plus the prototype's own."""

    candidates: int = 20
    """Best int8 scores kept per query and thread, then re-ranked exactly (at most 64)."""


@dataclass
class ListLayout:
    """Every list's vectors as int8 codes in AMX blocks, with their scales and where each padded slot came from."""

    codes: np.ndarray        # (blocks, dim / 4, 16) uint32, four int8 dims of one vector each
    scale: np.ndarray        # (blocks * 16,) float32: a slot's score is its int8 dot product times this
    block_start: np.ndarray  # (nlist + 1,) int64
    list_size: np.ndarray    # (nlist,) int32
    slot_ids: np.ndarray     # (blocks * 16,) int64: the vector id in each slot, -1 for padding


def int8_codes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes of each row (as uint32 words of four) and the row's scale."""
    scale = np.maximum(np.abs(x).max(1), 1e-12) / 127.0
    codes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(codes).view(np.uint32), scale.astype(np.float32)


def list_layout(ivf: faiss.IndexIVF, x: np.ndarray) -> ListLayout:
    invlists = ivf.invlists
    members = []
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        ids_ptr = invlists.get_ids(lst)
        members.append(faiss.rev_swig_ptr(ids_ptr, size).copy() if size else np.empty(0, np.int64))
        invlists.release_ids(lst, ids_ptr)
    sizes = np.array([len(m) for m in members], np.int32)
    blocks = (sizes + BLOCK - 1) // BLOCK
    block_start = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
    words = x.shape[1] // 4
    codes = np.zeros((block_start[-1], words, BLOCK), np.uint32)
    scale = np.zeros(block_start[-1] * BLOCK, np.float32)
    slot_ids = np.full(block_start[-1] * BLOCK, -1, np.int64)
    for lst, ids in enumerate(members):
        if not len(ids):
            continue
        c, s = int8_codes(x[ids])
        padded = np.zeros((blocks[lst] * BLOCK, words), np.uint32)
        padded[:len(ids)] = c
        codes[block_start[lst]:block_start[lst + 1]] = padded.reshape(blocks[lst], BLOCK, words).transpose(0, 2, 1)
        first = block_start[lst] * BLOCK
        scale[first:first + len(ids)] = s
        slot_ids[first:first + len(ids)] = ids
    return ListLayout(np.ascontiguousarray(codes), scale, block_start, sizes, slot_ids)


class AmxScan:
    """The compiled prototype (`amx_ivf_scan.c`) over one index's lists: `search(queries)` -> ids (nq, K)."""

    def __init__(self, library: Path, ivf: faiss.IndexIVF, x: np.ndarray, candidates: int) -> None:
        self.lib = ctypes.CDLL(str(library))
        if self.lib.amx_request() != 0:
            raise SystemExit("index_amx_scan.py: error: the kernel refused AMX state (arch_prctl); needs Linux >= 5.16")
        self.ivf, self.x, self.candidates = ivf, x, candidates
        self.layout = list_layout(ivf, x)
        self.threads = faiss.omp_get_max_threads()
        self.seconds: dict[str, list[float]] = {"coarse_and_grouping": [], "scan": [], "rerank": []}

    def search(self, queries: np.ndarray) -> np.ndarray:
        ptr = lambda a: ctypes.c_void_p(a.ctypes.data)  # noqa: E731
        lay, nq, nprobe = self.layout, len(queries), self.ivf.nprobe
        t0 = time.perf_counter()
        _, probes = self.ivf.quantizer.search(queries, nprobe)
        flat = probes.ravel()
        by_list = np.argsort(flat, kind="stable")
        pair_query = (by_list // nprobe).astype(np.int32)
        pair_start = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=self.ivf.nlist))]).astype(np.int64)
        query_codes, _ = int8_codes(queries)  # a query's scale does not change its ranking
        t1 = time.perf_counter()
        shape = (self.threads, nq, self.candidates)
        best_value, best_slot = np.empty(shape, np.float32), np.empty(shape, np.int64)
        status = self.lib.scan(ptr(lay.codes), ptr(lay.scale), ptr(lay.block_start), ptr(lay.list_size),
                               ptr(pair_start), ptr(pair_query), ptr(query_codes), ctypes.c_int(queries.shape[1]),
                               ctypes.c_int(nq), ctypes.c_int(self.ivf.nlist), ctypes.c_int(self.candidates),
                               ctypes.c_int(self.threads), ptr(best_value), ptr(best_slot))
        if status != 0:
            raise SystemExit(f"index_amx_scan.py: error: the kernel refused this index (code {status}): dims must be "
                             "a multiple of 64 up to 1024 and lists at most 16,384 vectors")
        t2 = time.perf_counter()
        found = np.empty((nq, K), np.int64)
        self.lib.rerank(ptr(self.x), ptr(queries), ptr(best_slot), ptr(lay.slot_ids), ctypes.c_int(queries.shape[1]),
                        ctypes.c_int(self.threads), ctypes.c_int(nq), ctypes.c_int(self.candidates), ctypes.c_int(K),
                        ptr(found))
        t3 = time.perf_counter()
        for name, seconds in zip(self.seconds, (t1 - t0, t2 - t1, t3 - t2)):
            self.seconds[name].append(seconds)
        return found


def check_machine() -> None:
    """One clear line, before any work, if this machine cannot build or run the kernel."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " amx_int8" not in flags:
        raise SystemExit("index_amx_scan.py: error: this CPU has no AMX (amx_int8); run it on an Intel Xeon of the "
                         "4th generation or later")
    if not shutil.which("gcc"):
        raise SystemExit("index_amx_scan.py: error: gcc is not installed; install it (apt install gcc)")


def compile_kernel(out: Path) -> Path:
    """`amx_ivf_scan.c` built for this CPU (`check_machine` first)."""
    library = out / "amx_ivf_scan.so"
    subprocess.run(["gcc", "-O3", "-march=native", "-mamx-tile", "-mamx-int8", "-fopenmp", "-shared", "-fPIC",
                    "-o", str(library), str(SOURCE)], check=True)
    return library


def main() -> None:
    args = parse_script_config(ScanConfig, sys.argv[1:], prog="benchmarks/index_amx_scan.py",
                               description=__doc__.splitlines()[0])
    if not 10 <= args.candidates <= 64:
        raise SystemExit("index_amx_scan.py: error: --candidates must be between 10 and 64")
    check_machine()
    emb_dir, index_dir = Path(args.work) / f"emb_{args.noise}", Path(args.work) / f"index_{args.noise}"
    if not (emb_dir.is_dir() and index_dir.is_dir()):
        raise SystemExit(f"index_amx_scan.py: error: {emb_dir} or {index_dir} is missing; run index_bench.py with "
                         f"the same arguments and --work {args.work} first")
    base = (real_base(args.base_emb, args.seed, args.dim or None) if args.base_emb
            else synthetic_base(args.concepts, args.dim, args.seed))
    queries = held_out_queries(base, args.queries, args.noise, args.seed)
    x = np.ascontiguousarray(np.concatenate(list(EmbeddingSet(emb_dir).batches("image"))), dtype=np.float32)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    flat_rates, truth = best_batched(flat, queries)
    del flat
    loaded = load_index(index_dir, "image", mmap=True)
    faiss_rates, faiss_found = best_batched(loaded.index, queries)
    ivf = faiss.extract_index_ivf(loaded.index)
    if ivf.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise SystemExit("index_amx_scan.py: error: the prototype scores inner products; this index uses another metric")
    with tempfile.TemporaryDirectory(prefix="amx-scan-") as work:  # the library stays mapped once loaded
        scan = AmxScan(compile_kernel(Path(work)), ivf, x, args.candidates)
    exact_lists = faiss.IndexIVFFlat(ivf.quantizer, x.shape[1], ivf.nlist, faiss.METRIC_INNER_PRODUCT)
    exact_lists.is_trained = True
    exact_lists.add(x)  # the same centroids assign each vector to the same list as in the index
    exact_lists.nprobe = ivf.nprobe
    _, ivf_flat_found = exact_lists.search(queries, K)
    del exact_lists
    amx_rates = []
    for _ in range(TIMED_PASSES):
        start = time.perf_counter()
        found = scan.search(queries)
        amx_rates.append(len(queries) / (time.perf_counter() - start))
    flat_qps = max(flat_rates)

    def figures(found_ids: np.ndarray, rates: list[float]) -> dict:
        return {"recall_at_10": round(recall_at_k(found_ids, truth, K), 4), "qps": round(max(rates), 1),
                "speedup_vs_flat": round(max(rates) / flat_qps, 1), "qps_passes": [round(r, 1) for r in rates]}

    same = float(np.mean([set(a) == set(b) for a, b in zip(found, ivf_flat_found)]))
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    print_figures({
        "benchmark": "index_amx_scan (prototype)", "index": loaded.summary["factory"],
        "params": loaded.summary["params"], "nlist": ivf.nlist, "nprobe": ivf.nprobe, "n": len(x), "dim": x.shape[1],
        "noise": args.noise, "queries": len(queries), "candidates": args.candidates,
        "flat_qps": round(flat_qps, 1), "flat_qps_passes": [round(r, 1) for r in flat_rates],
        "faiss": figures(faiss_found, faiss_rates),
        "amx_int8": {**figures(found, amx_rates), "same_ids_as_ivf_flat": round(same, 4),
                     "ivf_flat_recall_at_10": round(recall_at_k(ivf_flat_found, truth, K), 4),
                     "codes_bytes": scan.layout.codes.nbytes + scan.layout.scale.nbytes,
                     "ms_per_batch_median": {k: round(float(np.median(v)) * 1e3, 1) for k, v in scan.seconds.items()}},
        "environment": {**machine_info(("faiss-cpu", "numpy"), threads=faiss.omp_get_max_threads()),
                        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "gcc": gcc},
    })


if __name__ == "__main__":
    main()
