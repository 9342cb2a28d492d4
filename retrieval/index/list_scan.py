"""Batch search on CPUs with AMX: an IVF index's probed lists scored in int8 on tiles, then re-ranked exactly.

On an Intel Xeon with AMX (4th generation or later) `IndexFlatIP`'s fp32 BLAS
is fast enough that faiss's 4-bit fast scan stays under 50x it on real
embeddings at 256 dims, noise 1.0 (README, "Measured figures"). For a batch of
queries this module scans the same lists at the same nprobe another way:

- each vector as int8 codes with one float scale, laid out per list in blocks
  of 16 (`ListLayout`, built from the index's lists and re-ranking vectors on
  first use: ~270 MB beside the index at 1M x 256);
- the batch grouped by the lists its queries probe (faiss's coarse quantiser),
  up to 16 queries at a time as one AMX tile against each block of a list, so
  a list is read once a batch (`list_scan.c`, compiled here with gcc on first
  use, see `native.py`);
- each query's `candidates(k)` best int8 scores re-ranked exactly on the
  index's float32 vectors.

Its results are those of an `IndexIVFFlat` over the same lists at the same
nprobe (exact within the probed lists) but for near-ties the int8 shortlist
drops: at 1M x 256, noise 1.0, all 1,000 held-out queries had the same 10 ids,
and recall@10 0.963 against the fast scan's 0.956, at 77x flat's batched q/s
against 38x. It serves only `IVF...,RFlat` inner-product indices (the float
vectors it re-ranks on are the index's own), batches of `MIN_BATCH` or more
(one query is faster in faiss), and k up to `MAX_K`; `clipline index build`
measures it on the held-out queries and enables it only when its recall's
lower bound meets the target, it answers them faster than faiss, and its codes
fit the memory budget.
"""

from __future__ import annotations

import ctypes
import platform
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import faiss
import numpy as np

from data_tools.cpu_features import cpu_flags
from retrieval.index.native import load_library

KERNEL = Path(__file__).with_name("list_scan.c")
FLAGS = ("-O3", "-march=native", "-mamx-tile", "-mamx-int8", "-pthread")
BLOCK = 16  # vectors per block: one tile's columns
DIM_STEP = 64  # dimensions per tile step: codes are zero-padded to a multiple
MAX_DIM = 1024
MAX_K = 32
# Smallest batch it serves: 1,000 queries at 1M x 256, noise 1.0 (nprobe 24) in batches of 16 / 32 / 64 / 128 /
# 256 / 1,000 took 3.9k / 5.1k / 6.7k / 10.0k / 13.3k / 31.5k q/s, faiss's fast scan 7.8k / 8.4k / 9.0k / 9.6k /
# 10.9k / 17.0k (AMX host, 2 cores): each call pays for its threads and buffers, and a list is read once for
# the few queries of a small batch that probe it.
MIN_BATCH = 128
# Queries a kernel call takes: its buffers hold `candidates` per query and thread, and past ~1,000 queries a
# call reads each list for enough of them that larger calls gain little.
MAX_CALL = 4096
MAX_THREADS = 256  # list_scan.c's


def candidates(k: int) -> int:
    """int8 scores kept per query (by each thread as it scans, then the best of all threads), then re-ranked
    exactly: 20 for k = 10."""
    return min(max(20, 2 * k), 64)


def machine_unsupported() -> str | None:
    """Why this machine cannot run the scan, or None."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"it needs Linux on x86-64 with AMX, not {platform.system()} on {platform.machine()}"
    if not {"amx_tile", "amx_int8", "avx512f"} <= cpu_flags():
        return "this CPU has no AMX int8 tiles (Intel Xeon of the 4th generation or later has them)"
    if shutil.which("gcc") is None:
        return "gcc is not installed (apt install gcc)"
    return None


def index_unsupported(index: faiss.Index) -> str | None:
    """Why the scan cannot serve `index`, or None."""
    top = faiss.downcast_index(index)
    if not isinstance(top, faiss.IndexRefine) or not isinstance(faiss.downcast_index(top.refine_index), faiss.IndexFlat):
        return "it re-ranks on the index's float32 vectors: only IVF...,RFlat indices hold them"
    if faiss.try_extract_index_ivf(top.base_index) is None:
        return "it scans inverted lists: only IVF indices have them"
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return "it scores inner products; this index uses L2"
    if index.d > MAX_DIM:
        return f"it takes at most {MAX_DIM} dimensions, not {index.d}"
    return None


@dataclass
class ListLayout:
    """Every list's vectors as int8 codes in tile blocks, with their scales and where each padded slot came from."""

    codes: np.ndarray        # (blocks, padded dim / 4, 16) uint32: four int8 dims of one vector each
    scale: np.ndarray        # (blocks * 16,) float32: a slot's score is its int8 dot product times this
    block_start: np.ndarray  # (nlist + 1,) int64
    list_size: np.ndarray    # (nlist,) int32
    slot_ids: np.ndarray     # (blocks * 16,) int64: the vector id in each slot, -1 for padding

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.codes, self.scale, self.block_start, self.list_size, self.slot_ids))


def padded(dim: int) -> int:
    """`dim` rounded up to whole tile steps (the codes' zero-padded width)."""
    return -(-dim // DIM_STEP) * DIM_STEP


def int8_codes(x: np.ndarray, padded_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes of each row, zero-padded to `padded_dim` (as uint32 words of four), and its scale."""
    scale = np.maximum(np.abs(x).max(1), 1e-12) / 127.0
    codes = np.zeros((len(x), padded_dim), np.int8)
    codes[:, :x.shape[1]] = np.clip(np.rint(x / scale[:, None]), -127, 127)
    return codes.view(np.uint32), scale.astype(np.float32)


def list_layout(members: list[np.ndarray], vectors: np.ndarray) -> ListLayout:
    """The layout of lists holding the ids `members[list]`, whose float vectors are `vectors[id]`."""
    padded_dim = padded(vectors.shape[1])
    sizes = np.array([len(m) for m in members], np.int32)
    blocks = (sizes + BLOCK - 1) // BLOCK
    block_start = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
    words = padded_dim // 4
    codes = np.zeros((block_start[-1], words, BLOCK), np.uint32)
    scale = np.zeros(block_start[-1] * BLOCK, np.float32)
    slot_ids = np.full(block_start[-1] * BLOCK, -1, np.int64)
    for lst, ids in enumerate(members):
        if not len(ids):
            continue
        c, s = int8_codes(vectors[ids], padded_dim)
        rows = np.zeros((blocks[lst] * BLOCK, words), np.uint32)  # the list's slots, padding included
        rows[:len(ids)] = c
        codes[block_start[lst]:block_start[lst + 1]] = rows.reshape(blocks[lst], BLOCK, words).transpose(0, 2, 1)
        first = block_start[lst] * BLOCK
        scale[first:first + len(ids)] = s
        slot_ids[first:first + len(ids)] = ids
    return ListLayout(np.ascontiguousarray(codes), scale, block_start, sizes, slot_ids)


def list_members(ivf: faiss.IndexIVF) -> list[np.ndarray]:
    """The ids in each of `ivf`'s inverted lists."""
    invlists, members = ivf.invlists, []
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if not size:
            members.append(np.empty(0, np.int64))
            continue
        ids_ptr = invlists.get_ids(lst)
        members.append(faiss.rev_swig_ptr(ids_ptr, size).copy())
        invlists.release_ids(lst, ids_ptr)
    return members


@cache
def _kernel() -> ctypes.CDLL:
    lib = load_library(KERNEL, FLAGS)
    if lib.amx_request() != 0:
        raise OSError("Linux refused this process AMX state (arch_prctl); it needs kernel 5.16 or later")
    return lib


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def _check(status: int, step: str) -> None:
    """OSError for a kernel call's non-zero status (list_scan.c: -1 arguments, -2 memory)."""
    if status != 0:
        why = "out of memory" if status == -2 else "arguments it does not take"
        raise OSError(f"the AMX list scan's {step} failed (code {status}: {why})")


class ListScan:
    """`search(queries, k)` over an `IVF...,RFlat` inner-product index (see the module doc); the index must
    outlive it (its vectors are read in place). Raises `native.CompileError` or OSError if the kernel cannot
    be built or run here."""

    def __init__(self, index: faiss.Index) -> None:
        reason = machine_unsupported() or index_unsupported(index)
        if reason:
            raise ValueError(f"the AMX list scan cannot serve this index: {reason}")
        self.lib = _kernel()
        refine = faiss.downcast_index(index)
        self.ivf = faiss.extract_index_ivf(refine.base_index)
        self.dim, self.padded_dim = index.d, padded(index.d)
        flat = faiss.downcast_index(refine.refine_index)
        self.vectors = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
        self.layout = list_layout(list_members(self.ivf), self.vectors)
        self.max_list = int(self.layout.list_size.max(initial=0))

    @property
    def nbytes(self) -> int:
        """Memory it holds beside the index (codes, scales and slot ids)."""
        return self.layout.nbytes

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (nq, k), best first, of (nq, dim) float32 `queries` at the index's nprobe."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"the AMX list scan returns 1 to {MAX_K} results a query, not {k}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if len(queries) <= MAX_CALL:
            return self._search(queries, k)
        parts = [self._search(queries[i:i + MAX_CALL], k) for i in range(0, len(queries), MAX_CALL)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        lay, nq, nprobe, nlist = self.layout, len(queries), self.ivf.nprobe, self.ivf.nlist
        _, probes = self.ivf.quantizer.search(queries, nprobe)
        flat = probes.ravel()
        by_list = np.argsort(flat, kind="stable")
        by_list = by_list[flat[by_list] >= 0]  # fewer lists than nprobe: faiss pads with -1
        pair_query = (by_list // nprobe).astype(np.int32)
        counts = np.bincount(flat[by_list], minlength=nlist)
        pair_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        query_codes, _ = int8_codes(queries, self.padded_dim)  # a query's own scale does not change its ranking
        threads, kept = min(faiss.omp_get_max_threads(), MAX_THREADS), candidates(k)
        best_value = np.empty((threads, nq, kept), np.float32)
        best_slot = np.empty((threads, nq, kept), np.int64)
        status = self.lib.scan(_ptr(lay.codes), _ptr(lay.scale), _ptr(lay.block_start), _ptr(lay.list_size),
                               ctypes.c_int(self.max_list), _ptr(pair_start), _ptr(pair_query), _ptr(query_codes),
                               ctypes.c_int(self.padded_dim // 4), ctypes.c_int(nq), ctypes.c_int(nlist),
                               ctypes.c_int(kept), ctypes.c_int(threads), _ptr(best_value), _ptr(best_slot))
        _check(status, "scan")
        scores, ids = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
        status = self.lib.rerank(_ptr(self.vectors), _ptr(queries), _ptr(best_value), _ptr(best_slot),
                                 _ptr(lay.slot_ids), ctypes.c_int(self.dim), ctypes.c_int(threads), ctypes.c_int(nq),
                                 ctypes.c_int(kept), ctypes.c_int(k), _ptr(scores), _ptr(ids))
        _check(status, "re-ranking")
        return scores, ids
