"""The streaming loader: batches, rank/worker splits, resampling, corrupt data mid-stream."""

from __future__ import annotations

import itertools
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from torchvision.transforms.functional import to_tensor

from data_tools.build import BuildConfig, build_shards
from data_tools import loader as loader_module
from data_tools.errors import DataError
from data_tools.loader import LoaderConfig, _shard_source, count_samples, list_shards, make_loader, read_dataset_info
from data_tools.records import SourceData, SourceRecord
from tests.data_tools.conftest import FIXTURE_SHARDS, image_bytes


def _keys(loader) -> list[str]:
    return [key for batch in loader for key in batch["key"]]


def _loader(spec: str | Path | list[str], tokenize: loader_module.Tokenize | None = None,
            **config: object) -> loader_module.ShardLoader:
    """make_loader over `spec` with LoaderConfig(**config) and `tokenize`, images as tensors."""
    return make_loader(spec, LoaderConfig(**config), image_transform=to_tensor, tokenize=tokenize)


def _keys_per_rank(spec: str | Path | list[str], world_size: int, **config: object) -> list[list[str]]:
    """The keys each rank of `world_size` reads from `spec` with LoaderConfig(**config)."""
    return [_keys(_loader(spec, rank=rank, world_size=world_size, **config)) for rank in range(world_size)]


@pytest.fixture(scope="module")
def six_shards(tmp_path_factory) -> Path:
    """30 synthetic samples in 6 shards of 5, with labels 0..2."""
    out = tmp_path_factory.mktemp("six")
    records = [
        SourceRecord(key=f"s{i:03d}", captions=(f"caption {i}", f"variant {i}"), source="test",
                     image_bytes=image_bytes((i * 8, 100, 50)), label=f"c{i % 3}", cls=i % 3)
        for i in range(30)
    ]
    data = SourceData(name="synthetic", records=records, classes=["c0", "c1", "c2"])
    build_shards(data, BuildConfig(out=out, shard_size=5, workers=1, progress=False))
    return out


def test_batches_from_fixture_have_the_documented_fields() -> None:
    loader = _loader(FIXTURE_SHARDS, batch_size=16, num_workers=0)
    batches = list(loader)
    assert [len(b["key"]) for b in batches] == [16, 16, 16]
    first = batches[0]
    assert first["image"].shape == (16, 3, 64, 64) and first["image"].dtype == torch.float32
    assert first["label"].dtype == torch.long and first["label"].shape == (16,)
    assert first["text"] == first["caption"]  # no tokenizer: captions pass through
    classes = read_dataset_info(FIXTURE_SHARDS)["classes"]
    for label, meta, caption in zip(first["label"].tolist(), first["meta"], first["caption"]):
        assert classes[label] == meta["labels"]["category"]
        assert caption == meta["caption"]  # caption="first" gives the .txt
    assert loader.num_samples == 48 and loader.skipped == {}


def test_tokenizer_runs_in_the_pipeline_and_random_captions_vary() -> None:
    def tokenize(texts: list[str]) -> torch.Tensor:
        return torch.tensor([[len(t), 1] for t in texts])

    loader = _loader(FIXTURE_SHARDS, tokenize, batch_size=48, num_workers=0, caption="random", seed=3)
    batch = next(iter(loader))
    assert batch["text"].shape == (48, 2)
    assert batch["text"][:, 0].tolist() == [len(c) for c in batch["caption"]]
    assert all(c in m["captions"] for c, m in zip(batch["caption"], batch["meta"]))
    assert sum(c != m["caption"] for c, m in zip(batch["caption"], batch["meta"])) > 10


@pytest.mark.parametrize("shuffle", [False, True])
def test_two_ranks_by_two_workers_see_every_sample_once(six_shards: Path, shuffle: bool) -> None:
    per_rank = _keys_per_rank(six_shards, 2, batch_size=4, num_workers=2, shuffle=shuffle, shuffle_buffer=7, epoch=1)
    assert sorted(per_rank[0] + per_rank[1]) == [f"s{i:03d}" for i in range(30)]
    assert len(per_rank[0]) == len(per_rank[1]) == 15  # 3 shards each


def test_shuffle_depends_on_epoch_and_is_reproducible(six_shards: Path) -> None:
    def order(epoch: int) -> list[str]:
        return _keys(_loader(six_shards, batch_size=30, num_workers=0, shuffle=True, shuffle_buffer=10, epoch=epoch))

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(1)) == sorted(order(0))
    assert order(0) != sorted(order(0))


def test_fewer_shards_than_ranks_times_workers_ends_without_hanging(six_shards: Path) -> None:
    two = list_shards(six_shards)[:2]  # 2 shards for 2 ranks x 2 workers: two workers get nothing
    per_rank = _keys_per_rank(two, 2, batch_size=3, num_workers=2)
    assert sorted(per_rank[0] + per_rank[1]) == [f"s{i:03d}" for i in range(10)]
    assert _keys(_loader(two, batch_size=3, num_workers=0, rank=3, world_size=4)) == []


def test_resampled_is_endless_and_differs_between_ranks(six_shards: Path) -> None:
    def first_keys(rank: int) -> list[str]:
        loader = _loader(six_shards, batch_size=8, num_workers=2, resampled=True, shuffle=True, shuffle_buffer=5,
                         rank=rank, world_size=2)
        return [k for batch in itertools.islice(iter(loader), 12) for k in batch["key"]]

    rank0 = first_keys(0)
    assert len(rank0) == 96 > 30  # more than an epoch: it keeps going
    assert set(rank0) <= {f"s{i:03d}" for i in range(30)}
    assert rank0 != first_keys(1)


def test_resampled_shard_streams_differ_per_rank_and_worker(six_shards: Path, monkeypatch) -> None:
    """2 nodes x 2 processes x 2 loader workers: eight endless shard streams, each seeded by its global
    rank and worker id, so no two repeat each other and none runs out before another."""
    streams = {}
    for rank in range(4):
        loader = _loader(six_shards, batch_size=5, num_workers=2, resampled=True, shuffle=True, rank=rank, world_size=4)
        for worker in range(2):
            monkeypatch.setattr(loader_module, "_worker", lambda worker=worker: (worker, 2))
            streams[rank, worker] = tuple(itertools.islice(_shard_source(loader._spec), 40))
    assert all(len(draws) == 40 for draws in streams.values())  # more draws than the 6 shards: endless
    assert len(set(streams.values())) == 8


def _member_offset(tar_path: Path, name: str) -> int:
    with tarfile.open(tar_path) as tar:
        return tar.getmember(name).offset_data


def test_corrupt_tars_mid_stream_are_skipped_and_counted(tmp_path: Path, six_shards: Path) -> None:
    shards = shutil.copytree(six_shards, tmp_path / "shards")
    (shards / "00001.tar").write_bytes(b"")  # zero-byte tar: s005..s009 gone
    cut = _member_offset(shards / "00003.tar", "s017.jpg") + 50  # cut inside s017's image
    (shards / "00003.tar").write_bytes((shards / "00003.tar").read_bytes()[:cut])
    garble_at = _member_offset(shards / "00004.tar", "s020.jpg") + 100
    with open(shards / "00004.tar", "r+b") as handle:  # damage s020's image bytes, the tar stays valid
        handle.seek(garble_at)
        handle.write(b"\0" * 300)
    loader = _loader(shards, batch_size=4, num_workers=2)
    keys = _keys(loader)
    assert loader.skipped == {"corrupt_tar": 2, "undecodable_image": 1}
    lost = {f"s{i:03d}" for i in [5, 6, 7, 8, 9, 17, 18, 19, 20]}
    assert sorted(keys) == sorted({f"s{i:03d}" for i in range(30)} - lost)


def test_missing_directory_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        list_shards(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tar shards"):
        _loader(tmp_path / "empty", batch_size=2)
    assert read_dataset_info(tmp_path / "empty") == {}


def test_sources_joined_by_double_colon_and_brace_ranges(six_shards: Path) -> None:
    both = f"{six_shards}::{FIXTURE_SHARDS}"
    assert list_shards(both) == list_shards(six_shards) + list_shards(FIXTURE_SHARDS)
    assert count_samples(both) == 30 + read_dataset_info(FIXTURE_SHARDS)["num_samples"]
    first_two = f"{six_shards}/{{00000..00001}}.tar"
    assert count_samples(first_two) == 10
    keys = _keys(_loader(f"{first_two}::{six_shards}/00005.tar", batch_size=4, num_workers=0))
    assert sorted(keys) == [f"s{i:03d}" for i in [*range(10), *range(25, 30)]]
    with pytest.raises(DataError, match="00006.tar .*does not exist"):
        list_shards(f"{six_shards}/{{00000..00009}}.tar")
    with pytest.raises(DataError, match="nope does not exist"):
        list_shards(f"{six_shards}::{six_shards}/nope")


def test_weighted_sources_are_drawn_in_proportion(tmp_path: Path, six_shards: Path) -> None:
    """weights 3,1 over two copies of the same 30 samples: the first copy's shards are drawn 3 times in 4."""
    copy = shutil.copytree(six_shards, tmp_path / "copy")
    spec = f"{six_shards}::{copy}"
    loader = _loader(spec, batch_size=10, num_workers=0, resampled=True, source_weights=(3.0, 1.0), seed=4, rank=0,
                     world_size=1)
    draws = list(itertools.islice(_shard_source(loader._spec), 4000))
    share = sum(not d.startswith(str(copy)) for d in draws) / len(draws)
    assert 0.72 < share < 0.78
    assert len(next(iter(loader))["key"]) == 10  # and it yields batches
    with pytest.raises(DataError, match="1 source weights for 2 sources"):
        _loader(spec, batch_size=10, num_workers=0, resampled=True, source_weights=(1.0,))
    with pytest.raises(DataError, match="resampled"):
        _loader(spec, batch_size=10, num_workers=0, source_weights=(1.0, 1.0))


def test_batches_carry_concept_ids_shared_by_one_concept() -> None:
    """The fixture's emoji drawn by two vendors share a caption, so they share a concept id."""
    batch = next(iter(_loader(FIXTURE_SHARDS, batch_size=48, num_workers=0)))
    groups = batch["group"].tolist()
    assert batch["group"].dtype == torch.long and len(groups) == 48
    for i, j in itertools.combinations(range(48), 2):
        same_concept = batch["meta"][i].get("unified") == batch["meta"][j].get("unified")
        assert (groups[i] == groups[j]) == same_concept or batch["caption"][i] == batch["caption"][j]
    assert len(set(groups)) < 48  # the fixture holds both vendors of some concepts
