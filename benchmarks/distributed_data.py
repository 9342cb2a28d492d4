"""Local vs Ray for the data stages on this machine, and a simulated 4-worker Ray run.

    .venv/bin/python benchmarks/distributed_data.py --checkpoint RUN [--split val] [--shard-size 200] \
        > benchmarks/results/distributed_data.json

1. `data build emoji` local (2 worker processes) vs Ray (2 CPUs): the same cores, so the ratio is
   Ray's overhead (start-up, scheduling, the pack pass), not a cluster's speed-up. The shards must be
   byte-identical.
2. `embed` of those shards: local (one process) vs a Ray actor pool of 2 (one model per actor).
   The vectors must agree to float tolerance.
3. A simulated cluster: Ray with 4 worker CPUs on this machine: the build in 4 concurrent
   partitions (byte-identical again), and `index build` of an IVF index filled in one part per shard
   on 4 workers, merged on disk (the same neighbours as the local build).

Per-worker figures (images/s and samples/s per CPU) are what the README's cluster estimate uses.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from figures import print_figures, timed  # benchmarks/figures.py
from machine import machine_info  # benchmarks/machine.py (this script's folder is on sys.path)
from clipline.flags import parse_script_config
from data_tools.build import BuildConfig, build_shards
from data_tools.distributor import DistributorConfig
from data_tools.sources import SourceConfig, load_source

RAY = DistributorConfig(distributor="ray")


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def build_figures(tmp: Path, split: str, shard_size: int, ray_cpus: int) -> dict:
    data = load_source("emoji", SourceConfig(split=split))
    local = BuildConfig(out=tmp / "local", shard_size=shard_size, workers=2, progress=False)
    _, local_s = timed(build_shards, data, local)
    info, ray_s = timed(build_shards, data, replace(local, out=tmp / f"ray{ray_cpus}", distributed=RAY))
    n = info["num_samples"]
    return {"samples": n, "shards": len(info["shards"]), "local_2_processes_s": round(local_s, 2),
            "local_images_per_s": round(n / local_s, 1), f"ray_{ray_cpus}_cpus_s": round(ray_s, 2),
            f"ray_{ray_cpus}_cpus_images_per_s": round(n / ray_s, 1),
            "byte_identical": tree_bytes(tmp / "local") == tree_bytes(tmp / f"ray{ray_cpus}")}


def embed_figures(tmp: Path, checkpoint: str, shards: Path) -> dict:
    from retrieval.embed import EmbedConfig, embed_shards

    base = EmbedConfig(checkpoint=checkpoint, data=str(shards), out=str(tmp / "emb-local"), batch_size=64)
    info, local_s = timed(embed_shards, base, log=lambda m: None)
    _, ray_s = timed(embed_shards, replace(base, out=str(tmp / "emb-ray"), distributed=RAY, num_actors=2),
                     log=lambda m: None)
    worst = 0.0
    for folder in ("img_emb", "text_emb"):
        for part in sorted((tmp / "emb-local" / folder).glob("part_*.npy")):
            other = np.load(tmp / "emb-ray" / folder / part.name)
            worst = max(worst, float(np.abs(np.load(part) - other).max()))
    n = info["count"]
    return {"samples": n, "parts": info["parts"], "local_1_process_s": round(local_s, 2),
            "local_samples_per_s": round(n / local_s, 1), "ray_2_actors_s": round(ray_s, 2),
            "ray_2_actors_samples_per_s": round(n / ray_s, 1), "max_abs_difference": worst}


def index_figures(tmp: Path, emb: Path, factory: str) -> dict:
    import faiss

    from retrieval.embedding_store import EmbeddingSet
    from retrieval.index.build import IndexBuildConfig, build_index

    common = dict(emb=str(emb), factory=factory, modality="image", tune_queries=200)
    _, local_s = timed(build_index, IndexBuildConfig(out=str(tmp / "idx-local"), **common), log=lambda m: None)
    _, ray_s = timed(build_index, IndexBuildConfig(out=str(tmp / "idx-ray"), distributed=RAY, **common),
                     log=lambda m: None)
    local, merged = (faiss.read_index(str(tmp / name / "image.faiss")) for name in ("idx-local", "idx-ray"))
    queries = np.concatenate(list(EmbeddingSet(emb).batches("text")))
    same = True
    for nprobe in (1, 4, 16):
        faiss.extract_index_ivf(local).nprobe = faiss.extract_index_ivf(merged).nprobe = nprobe
        same &= bool(np.array_equal(local.search(queries, 10)[1], merged.search(queries, 10)[1]))
    return {"factory": factory, "parts": len(EmbeddingSet(emb).parts), "vectors": int(merged.ntotal),
            "local_s": round(local_s, 2), "ray_4_workers_s": round(ray_s, 2), "same_neighbours": same}


def start_ray(cpus: int) -> None:
    import ray

    for attempt in range(3):  # Ray gives its node 30 s to start, which a loaded machine can miss
        try:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            return
        except Exception:  # noqa: BLE001 - Ray raises plain Exception for a node that timed out starting
            ray.shutdown()
            if attempt == 2:
                raise


@dataclass(kw_only=True)
class BenchConfig:
    """Local vs Ray for the data stages on this machine, and a simulated 4-worker Ray run."""

    checkpoint: str
    """clipline run or checkpoint dir the embed stage uses."""
    split: str = "val"
    """Emoji split built (all, train or val)."""
    shard_size: int = 200
    """Samples per shard (the 4-worker build uses half, for more partitions)."""
    factory: str = "IVF16,Flat"
    """FAISS factory of the index filled in parts."""


def main() -> None:
    args = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/distributed_data.py")
    import ray

    figures: dict = {"machine": machine_info(("torch", "ray", "faiss-cpu", "pillow")),
                     "load_average_at_start": os.getloadavg()}
    tmp = Path(tempfile.mkdtemp(prefix="distributed-bench-"))
    try:
        start_ray(2)
        figures["build_2_cpus"] = build_figures(tmp / "b2", args.split, args.shard_size, 2)
        print(json.dumps(figures["build_2_cpus"]), file=sys.stderr)
        figures["embed_2_cpus"] = embed_figures(tmp, args.checkpoint, tmp / "b2" / "local")
        print(json.dumps(figures["embed_2_cpus"]), file=sys.stderr)
        ray.shutdown()
        start_ray(4)  # 4 simulated workers on 2 real cores
        figures["build_4_workers"] = build_figures(tmp / "b4", args.split, args.shard_size // 2, 4)
        figures["index_4_workers"] = index_figures(tmp, tmp / "emb-local", args.factory)
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures["load_average_at_end"] = os.getloadavg()
    print_figures(figures)


if __name__ == "__main__":
    main()
