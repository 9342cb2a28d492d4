"""Our tar reader against tars written by tarfile (every format) and webdataset's TarWriter."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from data_tools.tar_samples import TarFormatError, iter_tar_entries, iter_tar_samples, split_member_name
from tests.tar_writing import write_tar


def _read(path: Path) -> tuple[list[dict], list]:
    errors: list = []
    samples = list(iter_tar_samples(str(path), lambda *e: errors.append(e)))
    return [{k: v for k, v in s.items() if k != "__url__"} for s in samples], errors


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_every_tarfile_format_including_long_and_unicode_names(tmp_path: Path, fmt: int) -> None:
    long_dir = "d" * 120 if fmt != tarfile.USTAR_FORMAT else "d" * 60
    key = f"{long_dir}/caf\u00e9" if fmt != tarfile.USTAR_FORMAT else f"{long_dir}/cafe"
    members = [(f"{key}.jpg", b"J" * 700), (f"{key}.txt", b"caption"), ("other.seg.png", b"P"), ("other.seg.txt", b"t")]
    write_tar(tmp_path / "x.tar", [("somedir", b""), *members], format=fmt)  # a member naming no sample file is ignored
    samples, errors = _read(tmp_path / "x.tar")
    assert errors == []
    assert samples == [{"__key__": key, "jpg": b"J" * 700, "txt": b"caption"},
                       {"__key__": "other", "seg.png": b"P", "seg.txt": b"t"}]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("read_data", [True, False])
def test_entry_offsets_are_tarfiles_and_headers_only_skips_the_data(tmp_path: Path, fmt: int, read_data: bool) -> None:
    long_dir = "d" * 120 if fmt != tarfile.USTAR_FORMAT else "d" * 60
    members = [(f"{long_dir}/k.jpg", b"J" * 700), (f"{long_dir}/k.txt", b"caption"), ("empty", b""), ("m.png", b"P" * 513)]
    write_tar(tmp_path / "x.tar", members, format=fmt)
    with tarfile.open(tmp_path / "x.tar") as tar:
        expected = [(m.name, m.offset_data, m.size) for m in tar if m.isfile()]
    with open(tmp_path / "x.tar", "rb") as stream:
        entries = list(iter_tar_entries(stream, read_data=read_data))
    assert [(name, offset, size) for name, offset, size, _ in entries] == expected
    assert [data for *_, data in entries] == ([data for _, data in members] if read_data else [b""] * 4)


def test_headers_only_stops_at_a_member_cut_off(tmp_path: Path) -> None:
    members = [("a.jpg", b"A" * 600), ("a.txt", b"a"), ("b.jpg", b"B" * 2000)]
    write_tar(tmp_path / "x.tar", members, format=tarfile.USTAR_FORMAT)
    with tarfile.open(tmp_path / "x.tar") as tar:
        cut = tar.getmember("b.jpg").offset_data + 1024
    (tmp_path / "x.tar").write_bytes((tmp_path / "x.tar").read_bytes()[:cut])
    seen: list[str] = []
    with open(tmp_path / "x.tar", "rb") as stream, pytest.raises(TarFormatError, match="truncated"):
        for name, *_ in iter_tar_entries(stream, read_data=False):
            seen.append(name)
    assert seen == ["a.jpg", "a.txt"]


def test_reads_webdataset_tarwriter_output(tmp_path: Path) -> None:
    with wds.TarWriter(str(tmp_path / "w.tar")) as writer:
        for i in range(3):
            writer.write({"__key__": f"k{i}", "txt": f"caption {i}", "cls": i, "jpg": b"\xff\xd8" + bytes([i])})
    samples, errors = _read(tmp_path / "w.tar")
    assert errors == []
    assert [(s["__key__"], s["txt"], s["cls"]) for s in samples] == [(f"k{i}", f"caption {i}".encode(), str(i).encode()) for i in range(3)]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"), (b"just some text, not a tar at all" * 40, "not a tar file"), (b"\x00" * 100, "truncated")])
def test_unreadable_files_report_one_error(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "bad.tar").write_bytes(content)
    samples, errors = _read(tmp_path / "bad.tar")
    assert samples == [] and len(errors) == 1
    assert errors[0][0] == "corrupt_tar" and message in str(errors[0][2])


def test_cut_inside_a_new_sample_keeps_the_whole_one_before(tmp_path: Path) -> None:
    members = [("a.jpg", b"A" * 600), ("a.txt", b"a"), ("b.jpg", b"B" * 2000), ("b.txt", b"b")]
    write_tar(tmp_path / "x.tar", members, format=tarfile.USTAR_FORMAT)
    with tarfile.open(tmp_path / "x.tar") as tar:
        cut = tar.getmember("b.jpg").offset_data + 1024  # block-aligned cut inside b.jpg's data
    (tmp_path / "x.tar").write_bytes((tmp_path / "x.tar").read_bytes()[:cut])
    samples, errors = _read(tmp_path / "x.tar")
    assert [s["__key__"] for s in samples] == ["a"] and len(errors) == 1


def test_split_member_name() -> None:
    assert split_member_name("dir/abc.seg.PNG") == ("dir/abc", "seg.png")
    assert split_member_name("README") is None and split_member_name(".hidden") is None
