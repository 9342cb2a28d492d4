"""The same input gives byte-identical shards, whatever the number of workers."""

from __future__ import annotations

from pathlib import Path

from data_tools.build import BuildConfig, build_shards
from data_tools.sources import SourceConfig, load_source
from tests.data_tools.conftest import write_image


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for i in range(12):
        write_image(root / f"c{i % 3}" / f"{i:02d}.png", (i * 20, 255 - i * 20, 90), size=(50 + i, 40))
    outputs = []
    for name, workers in (("a", 2), ("b", 1), ("c", 2)):
        data = load_source(f"folder:{root}", SourceConfig())
        build_shards(data, BuildConfig(out=tmp_path / name, shard_size=5, workers=workers, image_size=24, progress=False))
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    assert list(outputs[0]) == ["00000.tar", "00001.tar", "00002.tar", "dataset.json"]
    assert outputs[0] == outputs[1] == outputs[2]
