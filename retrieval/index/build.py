"""`clipline index build`: embeddings -> tuned FAISS index in a self-contained directory.

    INDEX/image.faiss           the index (ids = row numbers of the embedding parts)
    INDEX/image.tuning.json     recall vs latency for every search setting tried, and the validation checks
    INDEX/summary.json          per modality: factory, size, memory, recall@10, latency, params, and whether
                                batches may use the AMX list scan (`batch_scan`, list_scan.py)
    INDEX/info.json             provenance: checkpoint, data dir, dim, count, metric
    INDEX/metadata/part_*.parquet  row metadata (hard-linked from EMB when possible)

Everything is written into a temporary sibling directory and renamed into
place at the end, so a failed build leaves no index and an existing one intact.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from data_tools.atomic_write import atomic_directory, write_json_atomic
from data_tools.distributor import DistributorConfig
from retrieval.embedding_store import EmbeddingSet
from retrieval.errors import RetrievalError
from retrieval.index import list_scan
from retrieval.index.choice import (TRAIN_POINTS_PER_LIST, IndexChoice, choose_index_factory, configure_index,
                                    more_accurate_choices, training_points)
from retrieval.index.memory_size import format_size, parse_size
from retrieval.index.native import CompileError
from retrieval.index.recall import end_to_end_recall
from retrieval.index.tune import (CONFIDENCE_Z, TuningResult, TuningRow, exact_neighbors, lower_bound,
                                  per_query_recall, tune_index)
from retrieval.metadata import MetadataTable
from retrieval.recorded_paths import rebased, record_path

INDEX_FORMAT = "clipline-index/1"
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
RECALL_K = 10


@dataclass(kw_only=True)
class IndexBuildConfig:
    """What to index and under which constraints."""

    emb: str
    """Embedding dir written by `clipline embed`."""
    out: str
    """Index dir to create (replaced only with --overwrite)."""
    max_memory: str = "4GB"
    """Memory the index may use when loaded (e.g. 2GB, 512MB); picks the factory."""
    target_recall: float = 0.95
    """Recall@10 against exact search that tuning must reach (1.0 = exact index)."""
    metric: Literal["ip", "l2"] = "ip"
    """Similarity: inner product (cosine on L2-normalised embeddings) or L2 distance."""
    modality: Literal["image", "text", "both"] = "image"
    """Which embeddings to index; `both` builds image.faiss and text.faiss."""
    factory: str | None = None
    """Override the chosen FAISS factory string (e.g. IVF1024,Flat)."""
    tune_queries: int = 2000
    """Queries for tuning (the other modality's embeddings when present): half tune the search setting,
    the other half check it (its recall's 95 % lower confidence bound must meet the target), and
    summary.json's recall is measured on that held-out half."""
    add_batch_size: int = 65536
    """Vectors added per call; bounds memory while adding."""
    overwrite: bool = False
    """Replace an existing index dir (the old one stays until the new one is complete)."""
    seed: int = 0
    """Seed for the training sample and tuning queries."""
    distributed: DistributorConfig = field(default_factory=DistributorConfig)
    """Local (one process) or ray: an IVF index trained once here, its parts filled by Ray tasks and merged on
    disk (same search results as a local build from the same trained index)."""


def build_index(config: IndexBuildConfig, log: Callable[[str], None] = print) -> dict:
    """Build, tune and write the index; return the summary written to summary.json."""
    if not 0.0 < config.target_recall <= 1.0:
        raise RetrievalError(f"`target_recall` {config.target_recall} must be in (0, 1]")
    budget = parse_size(config.max_memory)  # read once, before any work: a typo fails fast
    emb = EmbeddingSet(config.emb)
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise RetrievalError(f"{out} already exists; pass `overwrite` to replace it or choose another `out`")
    modalities = ["image", "text"] if config.modality == "both" else [config.modality]
    missing = [m for m in modalities if m not in emb.modalities()]
    if missing:
        raise RetrievalError(f"embedding dir {emb.root} has no {missing[0]} embeddings; "
                             f"choose `modality` from {emb.modalities()}")
    if config.factory:
        _choose(emb.count, emb.dim, budget, config)  # a factory that cannot work fails before anything is written
    with atomic_directory(out) as tmp:
        summary = {m: build_modality(emb, m, config, budget, tmp, log) for m in modalities}
        _link_metadata(emb, tmp / "metadata")
        write_json_atomic(tmp / "summary.json", summary)
        write_json_atomic(tmp / "info.json", _provenance(emb, config, modalities))
    log(f"index written to {out}")
    return summary


def build_modality(emb: EmbeddingSet, modality: str, config: IndexBuildConfig, budget: int, out_dir: Path,
                   log: Callable[[str], None]) -> dict:
    """Choose, train, fill, tune and write one modality's index within `budget` bytes; return its summary.

    When the chosen index misses the target recall on the held-out queries, the
    next more accurate index that fits the budget is built instead; when none
    fits, the budget is refused, naming the size of the smallest that could.
    """
    rng = np.random.default_rng(config.seed)
    choice = _choose(emb.count, emb.dim, budget, config)
    start = time.perf_counter()
    query_rows, source = _tuning_queries(emb, modality, config.tune_queries, rng)
    queries = emb.rows(source, query_rows)
    k = min(RECALL_K, emb.count)
    _, truth = exact_neighbors(emb.batches(modality, config.add_batch_size), queries, k, METRICS[config.metric])
    truth_s = time.perf_counter() - start
    while True:
        log(f"[{modality}] {emb.count} x {emb.dim} vectors, budget {format_size(budget)}: "
            f"{choice.factory} ({choice.reason})")
        index, timings, result = _build_and_tune(emb, modality, choice, config, rng, queries, truth, source, log,
                                                 work=out_dir / f".{modality}-parts")
        timings["tune_s"] += truth_s
        larger = more_accurate_choices(choice, emb.count, emb.dim)
        if result.target_met or config.factory or not larger:
            break  # a given factory, HNSW or the top of the ladder keeps its best setting, with the warning below
        fitting = [c for c in larger if c.estimated_bytes <= budget]
        if not fitting:
            _refuse_budget(result.chosen, larger, config.target_recall, budget, k)
        log(f"[{modality}] recall@{k} {_reached(result.chosen)} on held-out queries is below the target "
            f"{config.target_recall}: trying {fitting[0].factory}")
        choice = fitting[0]
    end_to_end = {}
    if source != modality:  # known caption<->image pairs: what the approximation costs a user
        _, found = index.search(queries, k)
        captions = MetadataTable(emb.metadata_files()).table.column("caption").to_pylist()
        end_to_end = end_to_end_recall(found, truth, captions, query_rows.tolist(), f"{source}_to_{modality}")

    path = out_dir / f"{modality}.faiss"
    faiss.write_index(index, str(path))
    write_json_atomic(out_dir / f"{modality}.tuning.json", [
        *(asdict(row) | {"split": "tuning"} for row in result.rows),
        *(asdict(row) | {"split": "validation"} for row in result.validation)])
    chosen = result.chosen
    held_out = _held_out(queries, truth)
    batch_scan = _check_batch_scan(index, *held_out, chosen, config.target_recall, budget - path.stat().st_size,
                                   lambda line: log(f"[{modality}] {line}")) if held_out else None
    if not result.target_met:
        log(f"[{modality}] warning: best recall@{k} {_reached(chosen)} is below the target "
            f"{config.target_recall}; raise --max-memory or lower --target-recall")
    return {
        "factory": choice.factory, "reason": choice.reason, "count": emb.count, "dim": emb.dim,
        "metric": config.metric, "params": chosen.params, "recall_at_10": chosen.recall_at_k,
        "recall_at_10_stderr": chosen.recall_stderr,
        "target_recall": config.target_recall, "target_met": result.target_met,
        "latency_ms_median": chosen.latency_ms_median, "latency_ms_p99": chosen.latency_ms_p99,
        "batched_qps": chosen.batched_qps, "size_on_disk_bytes": path.stat().st_size,
        "memory_bytes": path.stat().st_size, "estimated_memory_bytes": choice.estimated_bytes,
        "flat_size_bytes": emb.count * emb.dim * 4, "max_memory_bytes": budget,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "tuning_queries": len(queries), "tuning_query_source": f"{source} embeddings",
        "recall_measured_on": "held-out half of the tuning queries" if len(queries) > 1 else "the one query",
        "build_seconds": {name: round(v, 3) for name, v in timings.items()},
        "end_to_end": end_to_end,
        "batch_scan": batch_scan or {"enabled": False, "reason": "one query: nothing held out to check it on"},
    }


def _held_out(queries: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The validation half of the tuning queries and their exact ids (None for one query)."""
    half = len(queries) // 2
    return (queries[half:], truth[half:]) if half else None


def _check_batch_scan(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, chosen: TuningRow,
                      target_recall: float, room: int, log: Callable[[str], None]) -> dict:
    """Whether batches may use the AMX list scan (list_scan.py): it runs here, its codes fit `room` bytes
    beside the index, its recall on the held-out queries at the chosen setting meets the target by its 95 %
    lower bound (or, when the index itself missed the target, is no lower than the index's), and it answers
    them as one batch faster than faiss does (at 1M x 384 and 512, noise 0.5, faiss's fast scan was 1-5 %
    faster there, at lower recall)."""
    reason = list_scan.index_unsupported(index)
    if reason:  # Flat, HNSW, compressed codes: nothing to say in the log
        return {"enabled": False, "reason": reason}
    reason = list_scan.machine_unsupported()
    if reason is None and len(queries) < list_scan.MIN_BATCH:
        reason = f"{len(queries)} held-out queries are too few to check it on (it serves {list_scan.MIN_BATCH}+)"
    scan = None
    if reason is None:
        try:
            scan = list_scan.ListScan(index)
        except (CompileError, OSError) as err:
            reason = str(err)
    if scan is not None and scan.nbytes > room:
        reason = (f"its int8 codes ({format_size(scan.nbytes)}) do not fit in `max_memory` beside the index "
                  f"({format_size(max(room, 0))} left)")
    if scan is None or reason:
        log(f"batch scan off: {reason}")
        return {"enabled": False, "reason": reason}
    k = truth.shape[1]
    found, qps = _best_of_two(scan.search, queries, k)  # the first pass maps the vectors it re-ranks on
    _, faiss_qps = _best_of_two(index.search, queries, k)
    recalls = per_query_recall(found, truth, k)
    recall, stderr = float(recalls.mean()), float(recalls.std() / np.sqrt(len(recalls)))
    bound = recall - CONFIDENCE_Z * stderr
    if not (bound >= target_recall or (lower_bound(chosen) < target_recall and recall >= chosen.recall_at_k)):
        reason = f"recall@{k} lower bound {bound:.4f} is below the target"
    elif qps <= faiss_qps:
        reason = f"faiss answers the held-out batch faster ({faiss_qps:.0f} vs {qps:.0f} q/s)"
    log(f"batch scan {'off' if reason else 'on'}: AMX int8 list scan at {chosen.params}: recall@{k} "
        f"{recall:.4f} (95 % lower bound {bound:.4f}), {qps:.0f} q/s (faiss {faiss_qps:.0f}) on {len(queries)} "
        f"held-out queries, {format_size(scan.nbytes)} of codes")
    return {"enabled": not reason, "kind": "amx_int8_list_scan", "min_batch": list_scan.MIN_BATCH,
            "max_k": list_scan.MAX_K, "recall_at_10": round(recall, 4), "recall_at_10_stderr": round(stderr, 4),
            "batched_qps": round(qps, 1), "faiss_batched_qps": round(faiss_qps, 1), "memory_bytes": scan.nbytes,
            **({"reason": reason} if reason else {})}


def _best_of_two(search: Callable, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """The ids `search(queries, k)` found and its best q/s of two passes."""
    rate, found = 0.0, None
    for _ in range(2):
        start = time.perf_counter()
        _, found = search(queries, k)
        rate = max(rate, len(queries) / max(time.perf_counter() - start, 1e-9))
    return found, rate


def _build_and_tune(emb: EmbeddingSet, modality: str, choice: IndexChoice, config: IndexBuildConfig,
                    rng: np.random.Generator, queries: np.ndarray, truth: np.ndarray, source: str,
                    log: Callable[[str], None], work: Path) -> tuple[faiss.Index, dict[str, float], TuningResult]:
    """Train and fill `choice` (Ray parts under `work`), tune it on half the queries and validate on the other half."""
    index, timings = train_and_fill(emb, modality, choice, config, rng, log, work)
    start = time.perf_counter()
    k = truth.shape[1]
    half = len(queries) // 2  # tune on one half, confirm the choice on the other (held out)
    log(f"[{modality}] tuning on {half} {source} embeddings, validating on {len(queries) - half}, "
        f"target recall@{k} {config.target_recall}")
    validation = _held_out(queries, truth)
    tune_q, tune_truth = (queries[:half], truth[:half]) if validation else (queries, truth)  # one query: no split
    result = tune_index(index, tune_q, tune_truth, search_params=choice.search_params, nlist=choice.nlist,
                        target_recall=config.target_recall, k=k, log=log, validation=validation)
    timings["tune_s"] = time.perf_counter() - start
    return index, timings, result


def _reached(row: TuningRow) -> str:
    """A validated recall as the target is judged: its mean and the 95 % lower bound that must meet it."""
    return f"{row.recall_at_k:.3f} (95 % lower bound {lower_bound(row):.3f})"


def _refuse_budget(reached: TuningRow, larger: list[IndexChoice], target: float, budget: int, k: int) -> None:
    """One line: the recall reached within the budget and the smallest budget of an index that could reach more."""
    smallest = min(larger, key=lambda c: c.estimated_bytes)
    scale = 10 ** max(len(str(smallest.estimated_bytes)) - 3, 0)  # 3 digits, rounded up: enough, not just short
    need = format_size(math.ceil(smallest.estimated_bytes / scale) * scale)
    raise RetrievalError(f"recall@{k} {_reached(reached)} on held-out queries is below `target_recall` {target} "
                         f"within `max_memory` {format_size(budget)}; the smallest index that can reach it "
                         f"({smallest.factory}) needs `max_memory` {need}, or lower `target_recall`")


def train_and_fill(emb: EmbeddingSet, modality: str, choice: IndexChoice, config: IndexBuildConfig,
                   rng: np.random.Generator, log: Callable[[str], None],
                   work: Path) -> tuple[faiss.Index, dict[str, float]]:
    """The empty index trained on a sample, then filled batch by batch (memory: one batch + sample), or part by
    part on Ray workers (`work`: where the parts go before they are merged)."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    index = faiss.index_factory(emb.dim, choice.factory, METRICS[config.metric])
    configure_index(index)  # coarse k-means iterations, fast-scan query grouping (choice.py)
    ray = config.distributed.distributor == "ray"
    if ray:
        from retrieval.index.build_ray import check_mergeable, fill_with_ray

        check_mergeable(index, choice.factory)
    if not index.is_trained:
        train_size = choice.train_size or min(emb.count, 100_000)
        ids = np.sort(rng.choice(emb.count, size=min(train_size, emb.count), replace=False))
        log(f"[{modality}] training on {len(ids)} vectors")
        try:
            index.train(emb.rows(modality, ids))
        except RuntimeError as err:  # e.g. a PQ code book needs more vectors than there are
            reason = str(err).splitlines()[-1].split("failed: ")[-1][:200]
            raise RetrievalError(f"faiss cannot train {choice.factory} on {len(ids)} vectors ({reason}); "
                                 "choose a smaller `factory` or leave it out") from err
    timings["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    if ray:
        index = fill_with_ray(emb, modality, index, work, config.distributed, config.add_batch_size, log)
    else:
        next_report = 0
        for batch in emb.batches(modality, config.add_batch_size):
            index.add(batch)
            if index.ntotal >= next_report or index.ntotal == emb.count:  # about every 10 %
                log(f"[{modality}] added {index.ntotal}/{emb.count}")
                next_report = index.ntotal + emb.count // 10
    timings["add_s"] = time.perf_counter() - start
    return index, timings


def _choose(n: int, dim: int, budget: int, config: IndexBuildConfig) -> IndexChoice:
    if config.factory is None:
        return choose_index_factory(n, dim, budget, target_recall=config.target_recall)
    factory = config.factory
    params: tuple[str, ...] = ("efSearch",) if "HNSW" in factory.split(",")[0] else ()
    nlist = 0
    if "IVF" in factory:
        nlist = int(factory.split("IVF")[1].split(",")[0].split("_")[0])
        params = ("nprobe", "k_factor_rf") if ",R" in factory else ("nprobe",)
    if nlist > n:
        raise RetrievalError(f"`factory` {factory} splits the vectors into {nlist} lists but there are only {n} "
                             f"to train them on; use IVF{max(1, n // TRAIN_POINTS_PER_LIST)} or fewer lists, or leave "
                             "`factory` out to let the size choose")
    try:  # validate the string before spending time on anything else
        faiss.index_factory(dim, factory, METRICS[config.metric])
    except RuntimeError as err:
        reason = str(err).splitlines()[-1]
        raise RetrievalError(f"faiss cannot build factory {factory!r} for dim {dim}: {reason}") from err
    return IndexChoice(factory=factory, reason="given by --factory", estimated_bytes=0, nlist=nlist,
                       train_size=training_points(n, nlist), search_params=params)


def _tuning_queries(emb: EmbeddingSet, modality: str, count: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """(row ids, modality) of queries as search will see them: the other modality's embeddings when present."""
    other = "text" if modality == "image" else "image"
    source = other if other in emb.modalities() else modality
    return rng.choice(emb.count, size=min(count, emb.count), replace=False), source  # random order: halves alike


def _provenance(emb: EmbeddingSet, config: IndexBuildConfig, modalities: list[str]) -> dict:
    """info.json; paths relative to the index dir, so the tree can move (see retrieval.recorded_paths)."""
    out = Path(config.out)
    sources = rebased(emb.info, emb.root, out)
    return {
        "format": INDEX_FORMAT, "modalities": modalities, "count": emb.count, "dim": emb.dim,
        "metric": config.metric, "emb_dir": record_path(emb.root, out),
        "data_dir": sources.get("data_dir"), "checkpoint": sources.get("checkpoint"),
        "checkpoint_id": emb.info.get("checkpoint_id"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _link_metadata(emb: EmbeddingSet, dest: Path) -> None:
    """Hard-link the metadata parts (no copy) where the filesystem allows, else copy."""
    dest.mkdir()
    for src in emb.metadata_files():
        try:
            os.link(src, dest / src.name)
        except OSError:
            shutil.copy2(src, dest / src.name)
