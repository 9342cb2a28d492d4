"""`clipline index build --distributor ray`: parts filled on Ray workers, merged on disk, same results as local."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from data_tools.distributor import DistributorConfig
from retrieval.embedding_store import EmbeddingSet
from retrieval.errors import RetrievalError
from tests.retrieval.index.test_build import build

RAY = DistributorConfig(distributor="ray", max_retries=0)


def test_merged_index_searches_like_a_local_one(local_ray, emoji_emb: Path, tmp_path: Path) -> None:
    common = dict(factory="IVF4,Flat", modality="image", tune_queries=20)
    build(emoji_emb, tmp_path / "local", **common)
    build(emoji_emb, tmp_path / "ray", distributed=RAY, **common)
    local, merged = (faiss.read_index(str(tmp_path / name / "image.faiss")) for name in ("local", "ray"))
    assert merged.ntotal == local.ntotal == 48
    ivf_local, ivf_merged = faiss.extract_index_ivf(local), faiss.extract_index_ivf(merged)
    centroids = [ivf.quantizer.reconstruct_n(0, ivf.nlist) for ivf in (ivf_local, ivf_merged)]
    assert np.array_equal(*centroids)  # the same trained quantizer
    sizes = [[ivf.invlists.list_size(i) for i in range(ivf.nlist)] for ivf in (ivf_local, ivf_merged)]
    assert sizes[0] == sizes[1] and sum(sizes[0]) == 48 and max(sizes[0]) < 48  # lists really split the rows
    queries = np.concatenate(list(EmbeddingSet(emoji_emb).batches("text")))
    for nprobe in (1, 2, 4):
        ivf_local.nprobe = ivf_merged.nprobe = nprobe
        d_local, i_local = local.search(queries, 10)
        d_merged, i_merged = merged.search(queries, 10)
        assert np.array_equal(i_local, i_merged) and np.allclose(d_local, d_merged, atol=1e-6)
    assert not list((tmp_path / "ray").glob(".*parts"))  # the parts and on-disk lists are gone
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["image"]["factory"] == "IVF4,Flat" and summary["image"]["count"] == 48


def test_non_ivf_factory_is_refused_before_writing(emoji_emb: Path, tmp_path: Path) -> None:
    with pytest.raises(RetrievalError, match="`distributor` ray fills IVF indices"):
        build(emoji_emb, tmp_path / "idx", factory="Flat", distributed=RAY)
    assert not (tmp_path / "idx").exists()


def test_faiss_printing_during_the_merge_goes_to_stderr_not_stdout() -> None:
    """merge_ondisk's C code printf()s progress; `index build` keeps stdout for its results."""
    code = ("import ctypes; from retrieval.index.build_ray import c_stdout_to_stderr\n"
            "print('before', flush=True)\n"
            "with c_stdout_to_stderr(): ctypes.CDLL(None).printf(b'resizing x to 1 bytes\\n')\n"
            "print('after')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.stdout == "before\nafter\n"
    assert "resizing x to 1 bytes" in done.stderr
