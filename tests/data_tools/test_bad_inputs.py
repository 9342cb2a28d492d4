"""Bad inputs are skipped and counted (build and read), interrupted builds leave no finished-looking tar."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from torchvision.transforms.functional import to_tensor

from data_tools import shard_writer
from data_tools.build import BuildConfig, build_shards
from data_tools.build_marker import BUILD_MARKER
from data_tools.errors import DataError
from data_tools.loader import LoaderConfig, list_shards, make_loader
from data_tools.records import SourceData
from data_tools.sources import SourceConfig, load_source
from data_tools.sources import npm_cache
from data_tools.inspect_shards import inspect_shards
from data_tools.validate import validate_shards
from tests.clipline.running import run_clipline
from tests.data_tools.conftest import COLOURS, image_bytes, write_image


@pytest.fixture
def messy(tmp_path: Path) -> SourceData:
    """A folder source of 3 good pairs, plus a truncated JPEG, a text file named .jpg, and an empty caption."""
    root = tmp_path / "in"
    for i, colour in enumerate(COLOURS.values()):
        write_image(root / f"good{i}.jpg", colour, caption=f"good picture {i}")
    full = image_bytes((1, 2, 3), size=(64, 64), fmt="JPEG")
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "truncated.txt").write_text("half an image")
    (root / "notes.jpg").write_text("this is not an image")
    (root / "notes.txt").write_text("text pretending")
    write_image(root / "blank.png", (9, 9, 9), caption="   \n")
    return load_source(f"folder:{root}", SourceConfig())


def test_build_skips_and_counts_each_bad_input(tmp_path: Path, messy: SourceData) -> None:
    info = build_shards(messy, BuildConfig(out=tmp_path / "out", workers=2, progress=False))
    assert info["skipped"] == {"corrupt_image": 1, "not_an_image": 1, "empty_caption": 1}
    assert info["num_samples"] == 3
    loader = make_loader(tmp_path / "out", LoaderConfig(batch_size=8, num_workers=0), image_transform=to_tensor)
    assert sorted(c for batch in loader for c in batch["caption"]) == [f"good picture {i}" for i in range(3)]


def test_interrupted_build_leaves_only_finished_tars(tmp_path: Path, messy: SourceData,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_write, calls = shard_writer.ShardWriter.write, []

    def write_then_crash(self, sample) -> None:
        calls.append(sample.key)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C while the 2nd shard was open
        real_write(self, sample)

    monkeypatch.setattr(shard_writer.ShardWriter, "write", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        build_shards(messy, BuildConfig(out=tmp_path / "out", shard_size=2, workers=1, progress=False))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [BUILD_MARKER, "00000.tar"]
    with tarfile.open(tmp_path / "out" / "00000.tar") as tar:
        assert len(tar.getnames()) == 2 * 3  # complete: 2 samples x jpg/txt/json


def test_a_killed_build_is_called_incomplete_until_rebuilt(tmp_path: Path, messy: SourceData,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    real_write, calls = shard_writer.ShardWriter.write, []

    def write_then_die(self, sample) -> None:
        calls.append(sample.key)
        real_write(self, sample)
        if len(calls) == 3:
            raise SystemExit(137)  # SIGKILL: no clean-up runs, the open 2nd tar stays as *.tar.tmp

    monkeypatch.setattr(shard_writer.ShardWriter, "write", write_then_die)
    monkeypatch.setattr(shard_writer.ShardWriter, "abort", lambda self: None)
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        build_shards(messy, BuildConfig(out=out, shard_size=2, workers=1, progress=False))
    report = validate_shards(out)
    assert report["ok"] is False and report["problems_by_reason"] == {"incomplete_build": 1}
    assert report["num_good"] == 2  # the whole tar is readable, but the build is not whole
    for command in ("validate", "inspect"):
        code, stdout, _ = run_clipline(["data", command, str(out)], capsys)
        assert code == 1 and "incomplete build" in stdout
    (out / "00001.tar.tmp").unlink()  # killed between two tars: only the marker tells
    assert "did not finish" in inspect_shards(out)["incomplete_build"]
    monkeypatch.undo()
    build_shards(messy, BuildConfig(out=out, shard_size=2, workers=1, progress=False, overwrite=True))
    assert validate_shards(out)["ok"] and inspect_shards(out)["incomplete_build"] is None
    assert not (out / BUILD_MARKER).exists()


def test_a_leftover_tmp_shard_is_never_read(tmp_path: Path, messy: SourceData) -> None:
    out = tmp_path / "out"
    build_shards(messy, BuildConfig(out=out, workers=1, progress=False))
    (out / "00001.tar.tmp").write_bytes(b"partial")  # as if a build was killed with SIGKILL
    assert list_shards(out) == [str(out / "00000.tar")]
    with pytest.raises(DataError, match="already holds shards"):
        build_shards(messy, BuildConfig(out=out, workers=1, progress=False))


def test_validate_reports_zero_byte_truncated_and_undecodable(fixture_shards: Path) -> None:
    assert validate_shards(fixture_shards)["ok"] is True
    data = (fixture_shards / "00001.tar").read_bytes()
    (fixture_shards / "00001.tar").write_bytes(data[: len(data) // 2 + 7])
    (fixture_shards / "00002.tar").write_bytes(b"")
    with tarfile.open(fixture_shards / "00000.tar") as tar:
        offset = tar.getmember("google_1f600.jpg").offset_data
    with open(fixture_shards / "00000.tar", "r+b") as handle:
        handle.seek(offset + 20)
        handle.write(b"\xff" * 2000)
    report = validate_shards(fixture_shards)
    assert report["ok"] is False
    reasons = {(p["shard"], p["key"], p["reason"]) for p in report["problems"]}
    assert ("00000.tar", "google_1f600", "undecodable_image") in reasons
    assert ("00001.tar", None, "corrupt_tar") in reasons and ("00001.tar", None, "missing_samples") in reasons
    assert ("00002.tar", None, "corrupt_tar") in reasons
    assert report["shards"]["00000.tar"]["good"] == 23
    assert 0 < report["shards"]["00001.tar"]["good"] < 24


def test_missing_npm_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(npm_cache.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="npm is not installed"):
        npm_cache.npm_pack("emoji-datasource-google", "16.0.0", tmp_path)


@pytest.mark.parametrize(("spec", "message"), [
    ("imagenet", "unknown source 'imagenet'"), ("folder:/no/such/dir", "does not exist"),
    ("csv:/no/such.csv", "does not exist"), ("folder:", "needs a path")])
def test_bad_sources_raise_data_error(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_source(spec, SourceConfig())


def test_wrong_column_name_says_which_columns_exist(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", COLOURS["red"])
    (tmp_path / "t.csv").write_text("path,text\na.png,red\n")
    with pytest.raises(DataError, match="no column 'image' .*columns: path, text"):
        load_source(f"csv:{tmp_path / 't.csv'}", SourceConfig())
