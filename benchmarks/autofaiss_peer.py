"""The peer for index_bench.py: autofaiss builds and tunes its own index for the same data and budget.

Run by index_bench.py with the python of a throwaway venv that has autofaiss
(`python -m venv /tmp/afvenv && /tmp/afvenv/bin/pip install autofaiss`), so
autofaiss's pins never touch the project's environment:

    PYTHON autofaiss_peer.py EMB/img_emb OUT_DIR queries.npy MAX_MEMORY

Measures recall@10 against exact search and q/s exactly as index_bench.py
does (batched on all threads, single queries on one thread); prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from figures import timed  # benchmarks/figures.py (this script's folder is on sys.path)

K = 10


def main() -> None:
    import logging

    from autofaiss import build_index

    vectors_dir, out_dir, queries_path, max_memory = sys.argv[1:5]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (index, infos), build_s = timed(build_index, embeddings=vectors_dir, index_path=str(out / "knn.index"),
                                    index_infos_path=str(out / "infos.json"), max_index_memory_usage=max_memory,
                                    current_memory_available="8G", metric_type="ip", verbose=logging.WARNING)
    queries = np.load(queries_path).astype(np.float32)
    flat = faiss.IndexFlatIP(queries.shape[1])
    for part in sorted(Path(vectors_dir).glob("*.npy")):
        flat.add(np.load(part).astype(np.float32))
    _, truth = flat.search(queries, K)
    del flat
    (_, found), seconds = timed(index.search, queries, K)
    batched = len(queries) / seconds
    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    for q in queries:
        index.search(q[None], K)
    single = len(queries) / (time.perf_counter() - start)
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth))
    print(json.dumps({
        "index_key": infos.get("index_key"), "index_param": infos.get("index_param"),
        "recall_at_10": round(hits / (K * len(queries)), 4), "qps": round(batched, 1), "qps_single": round(single, 1),
        "build_s": round(build_s, 1), "size_on_disk_bytes": (out / "knn.index").stat().st_size,
        "autofaiss_infos": {k: v for k, v in infos.items() if isinstance(v, (int, float, str))},
    }))


if __name__ == "__main__":
    main()
