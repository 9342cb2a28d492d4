"""The index's AMX list scan at 1M vectors beside faiss's fast scan, and checked against `IndexIVFFlat`.

`retrieval/index/list_scan.py` answers batches of queries on CPUs with AMX
(Intel Xeon, 4th generation or later) by scoring the index's probed lists in
int8 on tiles and re-ranking exactly; `index_bench.py` reports its speed as the
product's batched path. This script runs it and faiss's own search on the same
built index, lists, nprobe, held-out queries and exact baseline, and checks the
property the scan is built on: its 10 ids are those of an `IndexIVFFlat` over
the same lists at the same nprobe (exact within the probed lists).

Run `index_bench.py ... --sweep '' --work DIR` first (it leaves DIR/emb_NOISE
and DIR/index_NOISE of its one level), then this script with the same
arguments. Needs what the scan needs (Linux on x86 with AMX, gcc) and says so
in one line otherwise. Prints one JSON object: recall@10 and batched q/s of
both paths and of flat, the scan's memory, and how often its 10 ids are
exactly `IndexIVFFlat`'s. (Until 4c9ceb4 this was a prototype with a kernel of
its own; its figures are in `results/index_amx_scan_xeon_amx.json`.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from clipline.flags import parse_script_config  # noqa: E402
from retrieval.embedding_store import EmbeddingSet  # noqa: E402
from retrieval.index import list_scan  # noqa: E402
from retrieval.index.store import load_index  # noqa: E402
from retrieval.index.tune import recall_at_k  # noqa: E402
from figures import print_figures, timed  # noqa: E402  (benchmarks/figures.py, this script's folder)
from index_bench import (  # noqa: E402
    K, BenchConfig, best_batched, held_out_queries, real_base, synthetic_base)
from machine import machine_info  # noqa: E402


def main() -> None:
    args = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/index_amx_scan.py",
                               description=__doc__.splitlines()[0])
    reason = list_scan.machine_unsupported()  # before any work
    if reason:
        raise SystemExit(f"index_amx_scan.py: error: the AMX list scan cannot run here: {reason}")
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
    reason = list_scan.index_unsupported(loaded.index)
    if reason:
        raise SystemExit(f"index_amx_scan.py: error: the AMX list scan cannot serve {index_dir}: {reason}")
    faiss_rates, faiss_found = best_batched(loaded.index, queries)
    scan, scan_build_s = timed(list_scan.ListScan, loaded.index)  # the product's, whether or not the build enabled it
    ivf = scan.ivf
    exact_lists = faiss.IndexIVFFlat(ivf.quantizer, x.shape[1], ivf.nlist, faiss.METRIC_INNER_PRODUCT)
    exact_lists.is_trained = True
    exact_lists.add(x)  # the same centroids assign each vector to the same list as in the index
    exact_lists.nprobe = ivf.nprobe
    _, ivf_flat_found = exact_lists.search(queries, K)
    del exact_lists
    scan_rates, found = best_batched(scan, queries)
    flat_qps = max(flat_rates)

    def figures(found_ids: np.ndarray, rates: list[float]) -> dict:
        return {"recall_at_10": round(recall_at_k(found_ids, truth, K), 4), "qps": round(max(rates), 1),
                "speedup_vs_flat": round(max(rates) / flat_qps, 1), "qps_passes": [round(r, 1) for r in rates]}

    same = float(np.mean([set(a) == set(b) for a, b in zip(found, ivf_flat_found)]))
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    print_figures({
        "benchmark": "index_amx_scan", "index": loaded.summary["factory"], "params": loaded.summary["params"],
        "batch_scan_enabled_by_build": loaded.summary.get("batch_scan", {}).get("enabled", False),
        "nlist": ivf.nlist, "nprobe": ivf.nprobe, "n": len(x), "dim": x.shape[1], "noise": args.noise,
        "queries": len(queries), "candidates": list_scan.candidates(K),
        "flat_qps": round(flat_qps, 1), "flat_qps_passes": [round(r, 1) for r in flat_rates],
        "faiss": figures(faiss_found, faiss_rates),
        "amx_int8": {**figures(found, scan_rates), "same_ids_as_ivf_flat": round(same, 4),
                     "ivf_flat_recall_at_10": round(recall_at_k(ivf_flat_found, truth, K), 4),
                     "memory_bytes": scan.nbytes, "build_s": round(scan_build_s, 2)},
        "environment": {**machine_info(("faiss-cpu", "numpy"), threads=faiss.omp_get_max_threads()), "gcc": gcc},
    })


if __name__ == "__main__":
    main()
