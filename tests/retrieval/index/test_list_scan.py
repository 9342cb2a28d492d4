"""The AMX list scan: its layout (any machine), its results against IndexIVFFlat's and the build's check of it
(AMX hosts), and what an index gets where the scan cannot run."""

from __future__ import annotations

import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval.index import build as build_module
from retrieval.index import list_scan, native
from retrieval.index.build import IndexBuildConfig, build_index
from retrieval.index.native import CompileError, load_library
from retrieval.index.store import load_index
from tests.retrieval.emb_fakes import clustered_vectors, write_embedding_dir

needs_amx = pytest.mark.skipif(list_scan.machine_unsupported() is not None,
                               reason=f"the AMX list scan cannot run here: {list_scan.machine_unsupported()}")
FACTORY = "IVF64,PQ16x4fsr,RFlat"


def slot_vectors(layout: list_scan.ListLayout, dim: int) -> np.ndarray:
    """Each slot's int8 codes times its scale: (slots, dim) float32, decoded from the tile blocks."""
    blocks, words, _ = layout.codes.shape
    codes = layout.codes.transpose(0, 2, 1).reshape(blocks * list_scan.BLOCK, words).copy().view(np.int8)
    return codes.astype(np.float32) * layout.scale[:, None], codes[:, dim:]


def test_layout_puts_each_id_in_its_lists_slots_with_codes_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 80)).astype(np.float32)
    members = [np.array([3, 0, 7]), np.empty(0, np.int64), np.arange(8, 28), np.arange(28, 40)]
    layout = list_scan.list_layout(members, vectors)
    assert layout.block_start.tolist() == [0, 1, 1, 3, 4]  # 16 slots a block: 3 -> 1, 0 -> 0, 20 -> 2, 12 -> 1
    assert layout.codes.shape == (4, 128 // 4, 16)  # 80 dims padded to 128, four int8 to a word
    slots = layout.slot_ids.reshape(-1, 16)
    assert slots[0, :3].tolist() == [3, 0, 7] and (slots[0, 3:] == -1).all()
    assert slots[1:3].ravel()[:20].tolist() == list(range(8, 28)) and (slots[2, 4:] == -1).all()
    assert sorted(layout.slot_ids[layout.slot_ids >= 0].tolist()) == [0, 3, 7, *range(8, 40)]  # each id once
    assert layout.list_size.tolist() == [3, 0, 20, 12]
    decoded, padding = slot_vectors(layout, 80)
    kept = layout.slot_ids >= 0
    step = np.abs(vectors).max(1) / 127
    error = np.abs(decoded[kept, :80] - vectors[layout.slot_ids[kept]])
    assert (error <= step[layout.slot_ids[kept], None] / 2 + 1e-7).all()
    assert not padding.any() and not decoded[~kept].any()  # padded dims and slots score 0


def test_the_indices_it_cannot_serve_say_why() -> None:
    x = clustered_vectors(2000, 64, seed=0)

    def reason(factory: str, metric: int = faiss.METRIC_INNER_PRODUCT) -> str | None:
        index = faiss.index_factory(64, factory, metric)
        index.train(x)
        return list_scan.index_unsupported(index)

    assert "RFlat" in reason("Flat") and "RFlat" in reason("IVF16,Flat") and "RFlat" in reason("IVF16,PQ16x4fsr")
    assert "L2" in reason("IVF16,PQ16x4fsr,RFlat", faiss.METRIC_L2)
    assert "IVF" in reason("HNSW8,RFlat")
    assert reason("IVF16,PQ16x4fsr,RFlat") is None


def test_missing_or_failing_compiler_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int f(void) { return }\n")
    if shutil.which("gcc"):
        with pytest.raises(CompileError, match=r"cannot compile broken\.c: .*error"):
            load_library(source, ("-O1",))
        assert not [*native.kernel_cache_dir().glob("*broken*"), *native.kernel_cache_dir().glob(".build-*")]
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CompileError, match="gcc is not installed"):
        load_library(source, ("-O2",))


def ivf_rflat(x: np.ndarray, nprobe: int) -> faiss.Index:
    dim = x.shape[1]
    index = faiss.index_factory(dim, f"IVF64,PQ{dim // 4}x4fsr,RFlat", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    faiss.ParameterSpace().set_index_parameters(index, f"nprobe={nprobe},k_factor_rf=4")
    return index


def ivf_flat_over_the_same_lists(index: faiss.Index, x: np.ndarray) -> faiss.IndexIVFFlat:
    ivf = faiss.extract_index_ivf(index)
    exact = faiss.IndexIVFFlat(ivf.quantizer, x.shape[1], ivf.nlist, faiss.METRIC_INNER_PRODUCT)
    exact.is_trained = True
    exact.add(x)  # the same centroids put each vector in the same list
    exact.nprobe = ivf.nprobe
    return exact


@needs_amx
@pytest.mark.parametrize(("dim", "k"), [(64, 10), (80, 10), (64, 1), (64, 32)])
def test_scan_returns_the_exact_results_within_the_probed_lists(dim: int, k: int) -> None:
    x = clustered_vectors(20_000, dim, seed=1)
    queries = clustered_vectors(400, dim, seed=2)
    index = ivf_rflat(x, nprobe=6)
    scan = list_scan.ListScan(index)
    for nprobe in (6, 1):  # the index's nprobe when it searches, not when the scan was built
        faiss.ParameterSpace().set_index_parameters(index, f"nprobe={nprobe}")
        scores, ids = scan.search(queries, k)
        want_scores, want_ids = ivf_flat_over_the_same_lists(index, x).search(queries, k)
        same = np.mean([set(a) == set(b) for a, b in zip(ids, want_ids)])
        assert same >= 0.99  # the int8 shortlist may drop a near-tie; here it kept them all or nearly
        assert np.allclose(scores, np.einsum("qd,qkd->qk", queries, x[ids]), atol=1e-5)  # exact scores of its ids
        assert np.allclose(scores[ids == want_ids], want_scores[ids == want_ids], atol=1e-5)
        assert (np.diff(scores, axis=1) <= 0).all()  # best first


@pytest.fixture(scope="module")
def rflat_emb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = clustered_vectors(20_000, 64, seed=3)
    text = image + 0.1 * np.random.default_rng(4).standard_normal(image.shape).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return write_embedding_dir(tmp_path_factory.mktemp("rflat") / "emb", image, text)


def build(emb: Path, out: Path) -> dict:
    return build_index(IndexBuildConfig(emb=str(emb), out=str(out), factory=FACTORY, tune_queries=600),
                       log=lambda message: None)["image"]


def scan_timed_faster(monkeypatch: pytest.MonkeyPatch, faster: bool = True) -> None:
    """The build's speed comparison of the scan with faiss, decided here instead of by the clock."""
    real = build_module._best_of_two

    def best_of_two(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
        is_scan = isinstance(getattr(search, "__self__", None), list_scan.ListScan)
        return real(search, queries, k)[0], 2000.0 if is_scan == faster else 1000.0

    monkeypatch.setattr(build_module, "_best_of_two", best_of_two)


@needs_amx
def test_build_checks_the_scan_and_batches_use_it(rflat_emb: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    scan_timed_faster(monkeypatch)
    summary = build(rflat_emb, tmp_path / "index")
    scan = summary["batch_scan"]
    assert scan["enabled"] and scan["kind"] == "amx_int8_list_scan"
    assert scan["recall_at_10"] - 1.645 * scan["recall_at_10_stderr"] >= 0.95  # held-out, as the index's own
    assert scan["memory_bytes"] >= 20_000 * 64  # a byte per dimension and vector, at least
    loaded = load_index(tmp_path / "index")
    queries = np.load(rflat_emb / "text_emb" / "part_00000.npy")[:300]
    scores, ids = loaded.search(queries, 10)
    assert loaded.batch_scan() is not None
    assert np.array_equal(ids, loaded.batch_scan().search(queries, 10)[1])
    monkeypatch.setattr(list_scan, "MAX_CALL", 128)  # a batch larger than one kernel call: the same results
    chunked = loaded.search(queries, 10)
    assert np.array_equal(chunked[1], ids) and np.array_equal(chunked[0], scores)
    few = queries[: list_scan.MIN_BATCH - 1]  # a small batch is faiss's
    assert np.array_equal(loaded.search(few, 10)[1], loaded.index.search(few, 10)[1])
    assert np.array_equal(loaded.search(queries, 40)[1], loaded.index.search(queries, 40)[1])  # k over MAX_K too


@needs_amx
def test_build_keeps_faiss_where_it_answers_the_batch_faster(rflat_emb: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    scan_timed_faster(monkeypatch, faster=False)
    scan = build(rflat_emb, tmp_path / "index")["batch_scan"]
    assert not scan["enabled"] and scan["reason"] == "faiss answers the held-out batch faster (2000 vs 1000 q/s)"
    assert scan["recall_at_10"] >= 0.95  # measured all the same
    loaded = load_index(tmp_path / "index")
    assert loaded.batch_scan() is None


def test_where_the_scan_cannot_run_batches_use_faiss(rflat_emb: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    queries = np.load(rflat_emb / "text_emb" / "part_00001.npy")[:300]
    if list_scan.machine_unsupported() is None:  # an index built with the scan, copied to a machine without it
        with monkeypatch.context() as patch:
            scan_timed_faster(patch)
            build(rflat_emb, tmp_path / "with")
        monkeypatch.setattr(list_scan, "machine_unsupported", lambda: "this CPU has no AMX int8 tiles")
        loaded = load_index(tmp_path / "with")
        with pytest.warns(UserWarning, match="use faiss, not the AMX list scan .*: this CPU has no AMX"):
            _, ids = loaded.search(queries, 10)
        assert np.array_equal(ids, loaded.index.search(queries, 10)[1])
    monkeypatch.setattr(list_scan, "machine_unsupported", lambda: "this CPU has no AMX int8 tiles")
    summary = build(rflat_emb, tmp_path / "without")
    assert summary["batch_scan"] == {"enabled": False, "reason": "this CPU has no AMX int8 tiles"}
    loaded = load_index(tmp_path / "without")
    assert np.array_equal(loaded.search(queries, 10)[1], loaded.index.search(queries, 10)[1])
    assert loaded.batch_scan() is None
