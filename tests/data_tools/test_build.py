"""The same input gives byte-identical shards, whatever the number of local workers, and with
`clipline data build --distributor ray` as in a local build."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from clipline.commands.data import main
from data_tools.build import BuildConfig, build_shards
from data_tools.build_marker import BUILD_MARKER
from data_tools.build_ray import shard_plan
from data_tools.distributor import DistributorConfig
from data_tools.errors import DataError
from data_tools.records import SourceData, SourceRecord
from data_tools.sources import SourceConfig, load_source
from tests.data_tools.conftest import image_bytes, write_image

RAY = DistributorConfig(distributor="ray", max_retries=1)


def _folder(root: Path, count: int = 17, corrupt: tuple[int, ...] = (3, 4, 9)) -> Path:
    for i in range(count):
        path = root / f"c{i % 3}" / f"{i:02d}.png"
        if i in corrupt:  # skipped as not_an_image, so kept samples shift across partitions
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"not an image")
        else:
            write_image(path, (i * 12, 255 - i * 12, 90), size=(50 + i, 40))
    return root


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    root = _folder(tmp_path / "in", count=12, corrupt=())
    outputs = []
    for name, workers in (("a", 2), ("b", 1), ("c", 2)):
        config = BuildConfig(out=tmp_path / name, shard_size=5, workers=workers, image_size=24, progress=False)
        build_shards(load_source(f"folder:{root}", SourceConfig()), config)
        outputs.append(_files(tmp_path / name))
    assert list(outputs[0]) == ["00000.tar", "00001.tar", "00002.tar", "dataset.json"]
    assert outputs[0] == outputs[1] == outputs[2]


def test_shard_plan_fills_shards_in_kept_order() -> None:
    plan = shard_plan([5, 3, 0, 5], shard_size=5)
    assert [[(s.partition, s.start, s.stop) for s in shard] for shard in plan] == [
        [(0, 0, 5)], [(1, 0, 3), (3, 0, 2)], [(3, 2, 5)]]


@pytest.mark.parametrize("corrupt", [(), (3, 4, 9)])
def test_ray_build_is_byte_identical_to_local(local_ray, tmp_path: Path, corrupt: tuple[int, ...]) -> None:
    root = _folder(tmp_path / "in", corrupt=corrupt)
    data = load_source(f"folder:{root}", SourceConfig())
    local = BuildConfig(out=tmp_path / "local", shard_size=5, workers=1, image_size=24, progress=False)
    build_shards(data, local)
    info = build_shards(data, replace(local, out=tmp_path / "ray", distributed=RAY))
    assert info["skipped"] == ({"not_an_image": 3} if corrupt else {})
    assert info["num_samples"] == 17 - len(corrupt)
    ray_files, local_files = _files(tmp_path / "ray"), _files(tmp_path / "local")
    assert list(ray_files) == [f"{n:05d}.tar" for n in range(len(ray_files) - 1)] + ["dataset.json"]
    assert ray_files == local_files  # tars and dataset.json (counts, skips by reason)


def test_failed_partition_is_named_and_nothing_looks_complete(local_ray, tmp_path: Path) -> None:
    png = image_bytes((200, 30, 30))
    good = [SourceRecord(key=f"k{i}", captions=(f"c {i}",), source="t", image_bytes=png) for i in range(6)]
    bad = SourceRecord(key="k6", captions=("c",), source="t", image_bytes=png, extra={"x": {1, 2}})  # not JSON
    data = SourceData(name="test", records=[*good, bad, *good[:0]])
    config = BuildConfig(out=tmp_path / "out", shard_size=4, image_size=16, progress=False, distributed=RAY)
    with pytest.raises(DataError, match=r"partition 1 \(records 4\.\.6\) failed after 2 tries: TypeError"):
        build_shards(data, config)
    assert (tmp_path / "out" / BUILD_MARKER).exists()
    assert not (tmp_path / "out" / "dataset.json").exists()
    assert not list((tmp_path / "out").glob("*.tar"))  # packing never started: no shard at all


def test_cli_flags_reach_the_build(local_ray, tmp_path: Path, capsys) -> None:
    root = _folder(tmp_path / "in", count=7, corrupt=())
    main(["build", f"folder:{root}", "--out", str(tmp_path / "out"), "--shard-size", "3", "--image-size", "16",
          "--distributor", "ray", "--no-progress"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_samples"] == 7 and summary["shards"] == {"00000.tar": 3, "00001.tar": 3, "00002.tar": 1}
    assert not (tmp_path / "out" / ".segments").exists()


def test_missing_ray_is_one_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    root = _folder(tmp_path / "in", count=3, corrupt=())
    config = BuildConfig(out=tmp_path / "out", image_size=16, progress=False, distributed=RAY)
    with pytest.raises(DataError, match=r"needs Ray: pip install 'clipline\[ray\]'"):
        build_shards(load_source(f"folder:{root}", SourceConfig()), config)
