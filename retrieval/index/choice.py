"""Choose a FAISS index factory from the vector count, dimension and memory budget.

The first rule whose index fits in `max_memory_bytes` wins:

1. `Flat`: exact search, when a brute-force query is cheap (n·dim ≤ 2**24,
   ≈ 32k vectors of 512 dims, a few ms per query on one core) or the set is too
   small to train a quantiser on, or the caller asks for recall 1.0.
2. `HNSW32,Flat`: mid-size sets (n ≤ `HNSW_MAX_VECTORS`) whose vectors plus
   graph fit. No training, recall ≥ 0.95 at small efSearch.
3. `IVF{nlist},PQ{m}x4fsr,RFlat`: large sets whose raw vectors fit. A 4-bit
   fast-scan PQ shortlists k·k_factor candidates (SIMD table look-ups, ~10× the
   speed of 8-bit PQ) and the raw vectors re-rank them exactly, so recall is
   bounded by the shortlist, not by quantisation error. The code has one
   sub-quantiser per 2 dimensions (dim/4 bytes): real embeddings tiled with
   noise put hundreds of near-tied copies around every query, and a coarser
   code (4 dimensions per sub-quantiser) ranks the true top 10 outside the
   shortlist too often: on 100k demo embeddings tiled with noise 0.5 (308
   concepts, ~325 copies each, as at 1M), held-out recall@10 at nprobe 16,
   k_factor 32 was 0.88 with 4-dim codes and 0.977 with 2-dim codes, at about
   the same CPU time per query. Up to `ONE_DIM_CODES_UP_TO` dimensions the code
   has one sub-quantiser per dimension (dim/2 bytes): at 256 dims the 2-dim
   code needed k_factor 64 (640 raw vectors re-ranked per query) where the
   1-dim code needs 8-16, and the flat baseline it is measured against is
   fastest there (1M demo embeddings tiled with noise 0.25 / 0.5 / 1.0:
   37× / 51× / 27× flat's batched q/s → 64× / 74× / 39×, recall ≥ 0.95).
   These one-dim codes encode the residual to the list centroid (`x4fsr`):
   at 256 dims, noise 1.0, recall is bound by probing (nprobe 32 with the
   coarse lists first used; 24 with those of TRAIN_POINTS_PER_LIST) and the
   plain code also needed k_factor 16; the residual code ranks the shortlist
   well enough at k_factor 4, and the per-list look-up tables it costs are
   cheaper than the 120 re-ranked vectors it saves (1M, 1,000 held-out
   queries, nprobe 32, three sets of interleaved timings on a loaded
   machine: recall@10 0.950 → 0.958, 1.12-1.38× the batched q/s and
   1.2-1.3× the single-query q/s; at noise 0.25 and 0.5 k_factor 16 and 8
   fell to 4, with recall ≥ 0.968).
   Codes of 2 dimensions per sub-quantiser (above `ONE_DIM_CODES_UP_TO`)
   encode residuals too: at 1M real embeddings tiled with noise 0.25 / 0.5 /
   1.0, plain → residual codes gave 46× / 67× / 51× → 66× / 109× / 50× flat's
   batched q/s at 384 dims and 51× / 93× / 53× → 93× / 109× / 59× at 512,
   held-out recall@10 ≥ 0.954 throughout (AMX host, one run per level,
   benchmarks/results/index_bench_1m_real_sweep_xeon_amx.json): the shortlist
   is ranked well enough for k_factor 4-16 where plain codes needed 8-32.
4. `IVF{nlist},PQ{m}x4fsr,Refine(SQfp16)`, else `Refine(SQ8)`: raw vectors do
   not fit; re-rank on half-precision (2× smaller, error ~5e-5 per dot product,
   still exact in practice) or 8-bit copies (4× smaller; its ~1e-3 error can
   swap near-tied neighbours, so it comes last).
5. `IVF{nlist},PQ{m}x4fsr`: only compressed codes fit; the largest code within
   budget, encoding residuals to the list centroid (more accurate than raw
   vectors at the same size, which matters when PQ error is the recall limit).
   No OPQ rotation: its training alone takes minutes on 2 cores (4 s per
   iteration for 20k x 64 dims at M=32, 50 iterations by default).
6. `IVF{nlist},Flat`: not chosen first, but the last step of the ladder
   (`more_accurate_choices`): exact distances within the probed lists, so
   raising nprobe reaches any recall. When a tuned index misses the target on
   held-out queries, the build moves up the ladder within the budget, and
   refuses the budget naming the size of the next step when that is over it.

IVF uses nlist ≈ 2·sqrt(n) lists, half of faiss's usual 4-16·sqrt(n): with
fast-scan codes scanning a list is ~10× cheaper than with float vectors, so
fewer, longer lists balance coarse assignment against scanning; and k-means
training and adding (assigning every vector) cost time linear in nlist (1M x
256, noise 1.0, AMX host: 4096 / 8192 lists held recall@10 >= 0.95 on held-out
queries at 1.04x / 1.06x the batched q/s of 2048, for 3.6x / 8.6x the k-means
time). The lists come from 25 k-means iterations (faiss's IVF default: 10, set by
`configure_index`) over 200 training points per list: at 1M x 256, noise 1.0,
they let nprobe 24 reach the recall that needed 32 with 10 over 50. Fast-scan
search groups up to 16 queries per list instead of 11 (batched q/s +5-8 %).
Measurements at the constants below.

Where this departs from autofaiss (which picks `Flat` only below 1,000
vectors, `HNSW` whenever it fits even at 100M vectors, and OPQ + 8-bit `PQ`
without re-ranking otherwise): exact search up to where it stays fast, HNSW only where
its build time is minutes on a few cores, and re-ranking whenever memory allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss

from retrieval.errors import RetrievalError
from retrieval.index.memory_size import format_size

# Brute force up to this many multiply-adds per query (≈ 3-5 ms on one core).
FLAT_MAX_WORK = 2**24
# Below this a coarse quantiser has too few points per list to be worth training.
MIN_TRAINABLE = 10_000
# HNSW insertion is O(n log n · efConstruction · dim). Measured on 2 cores,
# 512 dims: 200k build in 12 s and beat IVF-PQ+refine on speed at equal recall;
# at 1M (benchmarks/index_bench.py) HNSW32 built in 154 s and answered 102 q/s
# at recall@10 0.91 (autofaiss's tuning), IVF2048,PQ128x4fs,RFlat in 54 s and
# 15.8k q/s at 0.986.
HNSW_MAX_VECTORS = 300_000
HNSW_M = 32
# Coarse k-means: 200 training points per list and 25 iterations (faiss's IVF
# default is 10; it warns below 39 points per list and subsamples above 256).
# Better lists need fewer probes for the same recall. 1M demo embeddings at 256
# dims tiled with noise 1.0 (2048 lists), share of the exact top 10 inside the
# first 24 / 32 probed lists: 50 points x 10 iterations 0.951 / 0.963, 50 x 25
# 0.954 / 0.965, 100 x 10 0.955 / 0.970, 100 x 25 0.958 / 0.972, 200 x 25
# 0.961 / 0.970; so nprobe 24 holds the recall@10 that needed 32 (held-out,
# k_factor 4: 0.955 both) with 1.23x less CPU per batched query. At noise 0.25,
# where few probes suffice, the tuned settings cost the same (nprobe 2 vs 4:
# 48.0 vs 48.4 ms CPU per 1,000 queries, recall@10 0.960 vs 0.968). It costs
# training time: 10x the k-means work (linear in points x iterations x lists x
# dim). Quiet 2-core machine, 1M rows: k-means 51-73 s at 256 dims, 66-112 s at
# 384, 85-121 s at 512, where it took 8-15 s (whole build 78-156 s vs 37-54 s).
TRAIN_POINTS_PER_LIST = 200
COARSE_KMEANS_ITERATIONS = 25
# Fast-scan IVF search groups the queries that probe one list and scans the list
# once per group; faiss caps a group at 11 queries unless `qbs2` says more. A
# batch of 1,000 queries over 2 threads puts ~8 queries on each of 2048 lists at
# nprobe 32, more on popular lists: 16 per group gave 1.05-1.08x the batched q/s
# (same results; single queries unaffected). faiss miscomputes groups of 24
# (its kernel plan shifts by 32 bits: recall@10 0.955 -> 0.86), so stay well below.
FAST_SCAN_QUERIES_PER_LIST = 16
ID_BYTES = 8  # inverted lists store an int64 id per vector
ONE_DIM_CODES_UP_TO = 256  # rule 3: one 4-bit residual sub-quantiser per dimension up to here, plain per 2 above


@dataclass(frozen=True, kw_only=True)
class IndexChoice:
    """A factory string and what to expect from it."""

    factory: str
    """`faiss.index_factory` description, e.g. `IVF4096,PQ128x4fsr,RFlat`."""
    reason: str
    """One sentence: why this rule applied."""
    estimated_bytes: int
    """Approximate size of the built index in memory (and on disk)."""
    nlist: int = 0
    """Number of inverted lists (0 when the index is not IVF)."""
    train_size: int = 0
    """Vectors to train on (0 when the index needs no training)."""
    search_params: tuple[str, ...] = ()
    """Parameters the tuner sweeps: `efSearch`, `nprobe`, `k_factor_rf`."""


def configure_index(index: faiss.Index) -> None:
    """Settings a factory string cannot carry, set before training (faiss writes `qbs2` with the index)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return
    ivf = faiss.downcast_index(ivf)  # the fast-scan class, whatever wraps it
    ivf.cp.niter = COARSE_KMEANS_ITERATIONS
    if isinstance(ivf, faiss.IndexIVFFastScan):
        ivf.qbs2 = FAST_SCAN_QUERIES_PER_LIST


def training_points(n: int, nlist: int) -> int:
    """How many of `n` vectors train an index of `nlist` coarse lists (and its codes): TRAIN_POINTS_PER_LIST
    a list, at least 20,000, at most all of them."""
    return min(n, max(nlist * TRAIN_POINTS_PER_LIST, 20_000))


def ivf_list_count(n: int) -> int:
    """Power of two nearest 2·sqrt(n) (see the module doc), ≥ 39 points per list."""
    lists = 2 ** round(math.log2(max(2 * math.sqrt(n), 1)))
    while lists > 16 and n / lists < 39:
        lists //= 2
    return int(min(max(lists, 16), 2**16))


def pq_subquantizers(dim: int, bytes_per_vector: float) -> int:
    """Even divisor m of dim, m/2 bytes per 4-bit code, largest within bytes_per_vector.

    Returns 0 when no even divisor fits (odd dimension or too small a budget).
    """
    for m in range(min(dim, int(bytes_per_vector * 2)), 1, -1):
        if dim % m == 0 and m % 2 == 0:
            return m
    return 0


def _flat(n: int, dim: int, reason: str) -> IndexChoice:
    return IndexChoice(factory="Flat", reason=reason, estimated_bytes=n * dim * 4)


def _hnsw_bytes(n: int, dim: int) -> int:
    # level 0 keeps 2M neighbours, upper levels M with probability 1/M each
    links = (2 * HNSW_M + HNSW_M / (HNSW_M - 1)) * 4
    return int(n * (dim * 4 + links + 12))


def _ivf(n: int, dim: int, codes: str, code_bytes: float, refine: str, refine_bytes: int, reason: str) -> IndexChoice:
    nlist = ivf_list_count(n)
    coarse = f"IVF{nlist}_HNSW32" if nlist >= 16384 else f"IVF{nlist}"
    factory = ",".join(part for part in (coarse, codes, refine) if part)
    size = n * (code_bytes + ID_BYTES + refine_bytes) + nlist * dim * 4
    params = ("nprobe", "k_factor_rf") if refine else ("nprobe",)
    return IndexChoice(factory=factory, reason=reason, estimated_bytes=int(size), nlist=nlist,
                       train_size=training_points(n, nlist), search_params=params)


def choose_index_factory(n: int, dim: int, max_memory_bytes: int, *, target_recall: float = 0.95,
                         allow_hnsw: bool = True) -> IndexChoice:
    """The index for `n` vectors of `dim` within `max_memory_bytes` (rules in the module doc).

    `allow_hnsw=False` skips rule 2, for callers that need memory-mapped
    inverted lists or a build time linear in n.
    """
    if n <= 0 or dim <= 0:
        raise RetrievalError(f"cannot index {n} vectors of dimension {dim}; embed some data first")
    flat_bytes = n * dim * 4
    if flat_bytes <= max_memory_bytes:
        if target_recall >= 1.0:
            return _flat(n, dim, "target recall 1.0 asks for exact search")
        if n * dim <= FLAT_MAX_WORK:
            return _flat(n, dim, f"{n} x {dim} is small enough that exact search takes a few ms")
        if n < MIN_TRAINABLE:
            return _flat(n, dim, f"{n} vectors are too few to train a quantiser on")
    if allow_hnsw and n <= HNSW_MAX_VECTORS and _hnsw_bytes(n, dim) <= max_memory_bytes:
        return IndexChoice(
            factory=f"HNSW{HNSW_M},Flat",
            reason=f"mid-size set ({n} ≤ {HNSW_MAX_VECTORS}) and vectors + graph fit in memory",
            estimated_bytes=_hnsw_bytes(n, dim),
            search_params=("efSearch",),
        )
    for choice in reversed(_refined_choices(n, dim)):  # the most accurate that fits
        if choice.estimated_bytes <= max_memory_bytes:
            return choice
    return _compressed_choice(n, dim, max_memory_bytes)


def _refined_choices(n: int, dim: int) -> list[IndexChoice]:
    """Rules 4 and 3: fast-scan PQ shortlist re-ranked on SQ8, fp16 or raw vectors, smallest first."""
    one_dim = dim <= ONE_DIM_CODES_UP_TO  # see rule 3 in the module docstring
    m = pq_subquantizers(dim, dim / (2 if one_dim else 4))  # 4-bit codes: m/2 bytes, an accurate shortlist
    if not m or n < MIN_TRAINABLE:
        return []
    codes = f"PQ{m}x4fsr"  # residual codes: see rule 3
    return [_ivf(n, dim, codes, m / 2, refine, refine_bytes, why) for refine, refine_bytes, why in (
        ("Refine(SQ8)", dim, "only 8-bit copies of the vectors fit: re-rank on those"),
        ("Refine(SQfp16)", dim * 2, "raw vectors do not fit, float16 copies do: re-rank on those"),
        ("RFlat", dim * 4, "raw vectors fit: fast-scan PQ shortlist, exact re-ranking"),
    )]


def more_accurate_choices(choice: IndexChoice, n: int, dim: int) -> list[IndexChoice]:
    """The IVF indices above `choice` on the ladder (rule 5 < 4 < 3 < 6), smallest first.

    Each re-ranks on more exact vectors than the one before, and the last,
    `IVF{nlist},Flat`, computes exact distances within the probed lists, so
    enough nprobe reaches any recall. Empty for Flat, HNSW and given factories.
    """
    if not choice.factory.startswith("IVF") or n < MIN_TRAINABLE:
        return []
    exact_lists = _ivf(n, dim, "Flat", dim * 4, "", 0,
                       "exact distances within the probed lists: nprobe reaches any recall")
    ladder = [*_refined_choices(n, dim), exact_lists]
    above = next((i + 1 for i, c in enumerate(ladder) if c.factory == choice.factory), 0)  # not on it (rule 5): all
    return ladder[above:]


def _compressed_choice(n: int, dim: int, max_memory_bytes: int) -> IndexChoice:
    """Rule 5: the largest residual PQ code that fits, or an error saying how much is needed."""
    if n < MIN_TRAINABLE:
        raise RetrievalError(f"{n} x {dim} float32 vectors need {format_size(n * dim * 4)} but `max_memory` is "
                             f"{format_size(max_memory_bytes)}; raise `max_memory`")
    nlist = ivf_list_count(n)
    fixed = nlist * dim * 4
    per_vector = (max_memory_bytes - fixed) / n - ID_BYTES
    m = pq_subquantizers(dim, min(per_vector, dim / 4))  # at most 2-dim sub-vectors
    if m == 0:
        smallest = n * (1 + ID_BYTES) + fixed
        raise RetrievalError(f"no index of {n} x {dim} vectors fits in {format_size(max_memory_bytes)} "
                             f"(the smallest needs about {format_size(smallest)}); raise `max_memory`")
    why = f"only compressed codes fit: {m // 2} bytes per vector, residual PQ, no re-ranking"
    return _ivf(n, dim, f"PQ{m}x4fsr", m / 2, "", 0, why)
