"""The one atomic writer: files and directories appear whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_tools.atomic_write import (
    atomic_directory,
    atomic_path,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_json_text_and_bytes_land_whole_and_leave_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "report.json"
    assert write_json_atomic(out, {"top1": 0.5, "path": Path("/x"), "name": "café"}) == out
    assert out.read_text(encoding="utf-8") == '{\n  "top1": 0.5,\n  "path": "/x",\n  "name": "café"\n}\n'
    write_text_atomic(tmp_path / "a.md", "| a |\n")
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.md").read_text() == "| a |\n" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.md", "b.bin", "deep", "report.json"]


def test_atomic_path_keeps_the_suffix_for_writers_that_pick_the_format_from_it(tmp_path: Path) -> None:
    out = tmp_path / "part_00000.npy"
    with atomic_path(out) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npy" and tmp.name.startswith(".")
        np.save(tmp, np.arange(3))  # np.save appends .npy to a name without it
    assert np.load(out).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["part_00000.npy"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    write_json_atomic(out, {"v": 1})
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError):
        write_json_atomic(out, circular)
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert json.loads(out.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_directory_replaces_a_directory_whole(tmp_path: Path) -> None:
    out = tmp_path / "index"
    with atomic_directory(out) as tmp:
        assert tmp.name.startswith(".index.tmp-") and not out.exists()
        (tmp / "a.txt").write_text("old")
    with atomic_directory(out) as tmp:
        (tmp / "b.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # nothing moved aside is left


def test_a_failed_directory_write_leaves_the_old_one_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "index"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("killed mid-build")
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
