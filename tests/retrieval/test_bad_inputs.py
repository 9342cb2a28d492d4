"""Every user mistake: one `error:` line on stderr, exit status 2, the index on disk untouched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import RetrievalError
from retrieval.index.build import IndexBuildConfig, build_index
from retrieval.retriever import Retriever
from tests.clipline.running import error_line
from tests.retrieval.emb_fakes import clustered_vectors, write_embedding_dir


def fingerprint(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture()
def index_copy(emoji_index: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(emoji_index, tmp_path / "index"))


@pytest.mark.parametrize(("extra", "match"), [
    (["--text", "cat", "-k", "0"], "at least 1"),
    (["--text", "cat", "-k", "49"], "larger than the index (48 items)"),
    (["--text", "cat", "--image", "x.png"], "exactly one of --text or --image"),
    (["--text", "cat", "--modality", "text", "-k", "-3"], "at least 1"),
])
def test_bad_queries(index_copy: Path, capsys: pytest.CaptureFixture, extra: list[str], match: str) -> None:
    before = fingerprint(index_copy)
    assert match in error_line(["search", str(index_copy), *extra], capsys, alone=True)
    assert fingerprint(index_copy) == before


def test_undecodable_query_image(index_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "query.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    assert "does not decode" in error_line(["search", str(index_copy), "--image", str(bad)], capsys, alone=True)
    missing = error_line(["search", str(index_copy), "--image", str(tmp_path / "missing.png")], capsys, alone=True)
    assert "cannot read" in missing


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_index_file(index_copy: Path, capsys: pytest.CaptureFixture, damage: str) -> None:
    path = index_copy / "image.faiss"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else bytes(len(data)))
    before = fingerprint(index_copy)
    assert "rebuild the index" in error_line(["search", str(index_copy), "--text", "cat"], capsys, alone=True)
    assert fingerprint(index_copy) == before


@pytest.mark.parametrize(("argv", "match"), [
    (["search", "{tmp}", "--text", "cat"], "not an index dir"),
    (["index", "build", "{tmp}/emb", "--out", "{tmp}/i"], "no parts"),  # an empty embedding dir
    (["index", "build", "{tmp}/nothing", "--out", "{tmp}/i"], "does not exist"),
    (["index", "build", "{tmp}", "--out", "{tmp}/i", "--max-memory", "lots"], "memory size"),
    (["search", "{tmp}", "--text", "cat", "-k", "many"], "--k:"),
    (["index", "rebuild"], "unknown index command"),
])
def test_bad_paths_and_flags_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                          match: str) -> None:
    (tmp_path / "emb").mkdir()
    assert match in error_line([arg.format(tmp=tmp_path) for arg in argv], capsys, alone=True)
    assert not (tmp_path / "i").exists()


def test_parts_of_different_dimensions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    emb = write_embedding_dir(tmp_path / "emb", clustered_vectors(100, 16), clustered_vectors(100, 16))
    np.save(emb / "img_emb" / "part_00001.npy", clustered_vectors(50, 24))
    line = error_line(["index", "build", str(emb), "--out", str(tmp_path / "i")], capsys, alone=True)
    assert "mixes dimensions [16, 24]" in line


def test_query_dimension_must_match_the_index(tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    emb = write_embedding_dir(tmp_path / "emb", clustered_vectors(200, 16), clustered_vectors(200, 16))
    index = tmp_path / "i"
    build_index(IndexBuildConfig(emb=str(emb), out=str(index), tune_queries=20), log=lambda m: None)
    before = fingerprint(index)
    # the tiny checkpoint embeds to 256 dimensions, the index holds 16
    line = error_line(["search", str(index), "--text", "cat", "--checkpoint", str(tiny_run)], capsys, alone=True)
    assert "dimension 256 but the index holds dimension 16" in line
    with pytest.raises(RetrievalError, match="shape"):
        Retriever(index).search_embedding(np.ones((1, 8), np.float32), k=1)
    assert fingerprint(index) == before
