"""The one atomic writer: files and directories appear whole or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_tools.atomic_write import (_host_tag, atomic_directory, atomic_path, remove_stale_temporaries,
                                     write_bytes_atomic, write_json_atomic, write_text_atomic)
from data_tools.errors import DataError


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


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path: Path) -> None:
    host, dead = _host_tag(), dead_pid()
    killed = tmp_path / f".index.tmp-{host}-{dead}-ab12"
    live = tmp_path / f".index.tmp-{host}-{os.getpid()}-cd34"  # a writer still running: never touched
    other_host = tmp_path / f".index.tmp-{'0000' if host != '0000' else 'ffff'}-{dead}-ef56"
    other_target = tmp_path / f".report.tmp-{host}-{dead}-0a0b.json"
    for path in (killed, live, other_host):
        path.mkdir()
        (path / "half.faiss").write_bytes(b"half")
    other_target.write_text("{")
    with atomic_directory(tmp_path / "index") as tmp:
        (tmp / "whole.faiss").write_bytes(b"whole")
    assert not killed.exists() and live.exists() and other_host.exists() and other_target.exists()
    assert remove_stale_temporaries(tmp_path) == [other_target] and live.exists()


def test_wrong_kind_of_output_path_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a directory"):
        write_json_atomic(tmp_path, {})
    with pytest.raises(DataError, match="is a file"), atomic_directory(tmp_path / "file"):
        pass
    with pytest.raises(DataError, match="is a file, not a directory"):
        write_json_atomic(tmp_path / "file" / "report.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
