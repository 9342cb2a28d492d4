"""Tune search-time parameters (nprobe, k_factor_rf, efSearch) against exact search.

For each setting: recall@k of the index against exact neighbours of held-out
queries, batched throughput, and single-query latency (median and p99, one
thread: a server answers concurrent queries on separate cores, and OpenMP's
barrier would otherwise charge each query for whichever core is busy). The
chosen setting is the fastest single query that meets the target recall; when
none does, the most accurate.

Recall measured on a few hundred queries is itself an estimate: at 1M demo
embeddings tiled with noise (512-d, noise 0.5), a setting validated at 0.956 on
500 queries gave 0.9497 on 1,000 others; at 256-d, noise 1.0, the two halves of
1,000 held-out queries gave 0.956 and 0.949 for one setting (per-query recall's
standard deviation ~0.11, so ~0.005 standard error on 500). A setting therefore
meets the target on the validation split only when the one-sided 95 % lower
confidence bound of its mean recall does (mean - 1.645 standard errors).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import faiss
import numpy as np

EF_SEARCH = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
# Steps of ~1.4x from 8 probes: at 1M x 256, noise 1.0, nprobe 24 meets a target of 0.95
# that 16 misses, at 3/4 of the scanning 32 costs.
NPROBE = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
K_FACTOR = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Recall gains smaller than this between steps mean a parameter has saturated.
PLATEAU = 0.002
# Tuning recall (its lower confidence bound) a ladder goes past the target before it
# stops, so the validation split has a slightly costlier setting to fall back on.
VALIDATION_MARGIN = 0.01
# z of a one-sided 95 % confidence bound: validated recall - CONFIDENCE_Z standard errors must meet the target.
CONFIDENCE_Z = 1.645


@dataclass(frozen=True, kw_only=True)
class TuningRow:
    """One setting measured."""

    params: str
    """Parameter string for `faiss.ParameterSpace`, e.g. `nprobe=16,k_factor_rf=8`."""
    recall_at_k: float
    """Mean |top-k ∩ exact top-k| / k over the tuning queries."""
    recall_stderr: float
    """Standard error of that mean (per-query recall's standard deviation / sqrt(queries))."""
    latency_ms_median: float
    """Median single-query latency, one thread."""
    latency_ms_p99: float
    """99th percentile single-query latency, one thread."""
    batched_qps: float
    """Queries/s when all tuning queries are searched in one call (all threads)."""


@dataclass(frozen=True, kw_only=True)
class TuningResult:
    rows: list[TuningRow]
    """Every setting tried, in the order tried."""
    chosen: TuningRow
    """Fastest setting at or above the target recall, judged on the validation split by the recall's lower
    bound where there is one (else the most accurate)."""
    target_met: bool
    validation: list[TuningRow] = field(default_factory=list)
    """The validation split's measurements of the settings checked there, in the order checked (`chosen` is
    one of them); empty without a validation split."""


def exact_neighbors(batches: Iterable[np.ndarray], queries: np.ndarray, k: int,
                    metric: int = faiss.METRIC_INNER_PRODUCT) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, ids) of `queries` over vectors streamed in batches, ids in stream order."""
    heap = faiss.ResultHeap(len(queries), k, keep_max=metric == faiss.METRIC_INNER_PRODUCT)
    offset = 0
    for batch in batches:
        kb = min(k, len(batch))
        scores, ids = faiss.knn(queries, batch, kb, metric=metric)
        if kb < k:  # pad so every block reports k columns
            scores = np.pad(scores, ((0, 0), (0, k - kb)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - kb)), constant_values=-1)
        heap.add_result(scores, np.where(ids >= 0, ids + offset, -1))
        offset += len(batch)
    heap.finalize()
    return heap.D, heap.I


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:, :k] ∩ truth[:, :k]| / k (neighbour recall, ANN-style)."""
    return float(per_query_recall(found, truth, k).mean())


def per_query_recall(found: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """|found[i, :k] ∩ truth[i, :k]| / k for every query i."""
    return np.array([len(np.intersect1d(f[:k], t[:k])) / k for f, t in zip(found, truth)])


def lower_bound(row: TuningRow) -> float:
    """One-sided 95 % lower confidence bound of the row's mean recall."""
    return row.recall_at_k - CONFIDENCE_Z * row.recall_stderr


def measure(index: faiss.Index, params: str, queries: np.ndarray, truth: np.ndarray, k: int) -> TuningRow:
    """Recall, batched q/s and single-query latency (over the first 200 queries) of `index` under `params`."""
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    start = time.perf_counter()
    _, found = index.search(queries, k)
    batched_qps = len(queries) / max(time.perf_counter() - start, 1e-9)
    latencies = single_query_latencies(index, queries[:200], k)
    recalls = per_query_recall(found, truth, k)
    return TuningRow(
        params=params,
        recall_at_k=round(float(recalls.mean()), 4),
        recall_stderr=round(float(recalls.std() / np.sqrt(len(recalls))), 4),
        latency_ms_median=round(float(np.median(latencies)) * 1e3, 4),
        latency_ms_p99=round(float(np.percentile(latencies, 99)) * 1e3, 4),
        batched_qps=round(batched_qps, 1),
    )


def single_query_latencies(index: faiss.Index, queries: np.ndarray, k: int) -> np.ndarray:
    """Seconds per query, searched one at a time on one thread."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        times = np.empty(len(queries))
        for i in range(len(queries)):
            start = time.perf_counter()
            index.search(queries[i : i + 1], k)
            times[i] = time.perf_counter() - start
    finally:
        faiss.omp_set_num_threads(threads)
    return times


def candidate_settings(search_params: tuple[str, ...], nlist: int) -> Iterator[list[str]]:
    """Ladders of settings, each in increasing cost; a ladder stops once it meets the target."""
    if search_params == ("efSearch",):
        yield [f"efSearch={ef}" for ef in EF_SEARCH]
    elif "nprobe" in search_params:
        probes = [p for p in NPROBE if p <= nlist]
        factors = K_FACTOR if "k_factor_rf" in search_params else (None,)
        for factor in factors:
            suffix = f",k_factor_rf={factor}" if factor else ""
            yield [f"nprobe={p}{suffix}" for p in probes]
    else:
        yield [""]


def tune_index(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, *,
               search_params: tuple[str, ...], nlist: int = 0, target_recall: float = 0.95,
               k: int = 10, log=print, validation: tuple[np.ndarray, np.ndarray] | None = None) -> TuningResult:
    """Sweep each ladder of settings until target recall or a plateau; pick the fastest that meets it.

    With `validation` (queries, exact ids) disjoint from the tuning queries, the
    chosen setting is the fastest whose recall holds on the validation split
    too, by its 95 % lower confidence bound: a setting picked on the queries it
    was tuned on overstates its recall, and a mean over a few hundred queries
    moves by half a percentage point from one query set to another.
    """
    rows: list[TuningRow] = []
    for ladder in candidate_settings(search_params, nlist):
        previous = -1.0
        for params in ladder:
            row = measure(index, params, queries, truth, k)
            rows.append(row)
            log(f"  {params or 'exact'}: recall@{k} {row.recall_at_k:.4f} (± {row.recall_stderr:.4f}), "
                f"{row.latency_ms_median:.3f} ms/query, {row.batched_qps:.0f} q/s batched")
            # one step past the target: the validation split may need the next setting up
            if lower_bound(row) >= target_recall + VALIDATION_MARGIN or row.recall_at_k - previous < PLATEAU:
                break
            previous = row.recall_at_k
        if _ladder_cannot_win(rows, ladder, target_recall + VALIDATION_MARGIN):
            break
    checks: list[TuningRow] = []
    if validation is None:
        chosen, met = choose_setting(rows, target_recall)
    else:
        chosen, met, checks = _validated_setting(index, rows, validation, target_recall, k, log)
    if chosen.params:
        faiss.ParameterSpace().set_index_parameters(index, chosen.params)
    return TuningResult(rows=rows, chosen=chosen, target_met=met, validation=checks)


def _validated_setting(index: faiss.Index, rows: list[TuningRow], validation: tuple[np.ndarray, np.ndarray],
                       target_recall: float, k: int, log) -> tuple[TuningRow, bool, list[TuningRow]]:
    """Fastest tuning row whose recall on the validation split meets the target with 95 % confidence (its
    lower bound does), as measured there; else the most accurate tuning row, measured there. Also every
    measurement taken on the validation split, in order."""
    val_queries, val_truth = validation
    checks: list[TuningRow] = []

    def check(row: TuningRow) -> TuningRow:
        checked = measure(index, row.params, val_queries, val_truth, k)
        log(f"  validation {row.params or 'exact'}: recall@{k} {checked.recall_at_k:.4f}, "
            f"95 % lower bound {lower_bound(checked):.4f}")
        checks.append(checked)
        return checked

    meeting = [r for r in rows if r.recall_at_k >= target_recall]
    for row in sorted(meeting, key=lambda r: (r.latency_ms_median, -r.recall_at_k)):
        checked = check(row)
        if lower_bound(checked) >= target_recall:
            return checked, True, checks
    best = max(rows, key=lambda r: (r.recall_at_k, -r.latency_ms_median))
    return next((c for c in checks if c.params == best.params), None) or check(best), False, checks


def _ladder_cannot_win(rows: list[TuningRow], ladder: list[str], target_recall: float) -> bool:
    """Stop trying larger k_factor once a ladder met the target slower than an earlier one did."""
    met = [r for r in rows if lower_bound(r) >= target_recall]
    if len(met) < 2:
        return False
    this_ladder = [r for r in met if r.params in ladder]
    return bool(this_ladder) and min(r.latency_ms_median for r in this_ladder) > min(
        r.latency_ms_median for r in met
    )


def choose_setting(rows: list[TuningRow], target_recall: float) -> tuple[TuningRow, bool]:
    """(fastest row meeting target, True), else (most accurate row, False)."""
    meeting = [r for r in rows if r.recall_at_k >= target_recall]
    if meeting:
        return min(meeting, key=lambda r: (r.latency_ms_median, -r.recall_at_k)), True
    return max(rows, key=lambda r: (r.recall_at_k, -r.latency_ms_median)), False
