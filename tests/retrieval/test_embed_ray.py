"""`clipline embed --distributor ray`: the parts of a local embed, resumable part by part."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_tools.distributor import DistributorConfig
from retrieval.embed import embed_shards
from tests.retrieval.conftest import FIXTURE_SHARDS, PARTS, embed_config


def _ray_embed(run: Path, out: Path, encoder, messages: list[str], *, data: Path = FIXTURE_SHARDS,
               precision: str = "fp32") -> dict:  # fp32: as the local `emoji_emb` it is compared with
    config = embed_config(run, out, data=data, batch_size=16, precision=precision,
                          distributed=DistributorConfig(distributor="ray"), num_actors=2)
    return embed_shards(config, encoder=encoder, log=messages.append)


def test_ray_embed_equals_local_and_resumes(local_ray, emoji_emb: Path, tiny_run: Path, encoder,
                                            tmp_path: Path) -> None:
    out = tmp_path / "emb"
    info = _ray_embed(tiny_run, out, encoder, [])
    local = json.loads((emoji_emb / "info.json").read_text())
    assert info["complete"] and info["count"] == local["count"] == 48 and info["shards"] == local["shards"]
    for part in PARTS:
        for folder in ("img_emb", "text_emb"):
            assert np.allclose(np.load(out / folder / f"{part}.npy"), np.load(emoji_emb / folder / f"{part}.npy"),
                               atol=1e-5)
        assert pq.read_table(out / "metadata" / f"{part}.parquet").equals(
            pq.read_table(emoji_emb / "metadata" / f"{part}.parquet"))

    # a killed job: part 1's metadata (written last) never landed; the rerun redoes part 1 only
    kept_mtime = (out / "img_emb" / "part_00000.npy").stat().st_mtime_ns
    (out / "metadata" / "part_00001.parquet").unlink()
    messages: list[str] = []
    info = _ray_embed(tiny_run, out, encoder, messages)
    assert info["complete"] and info["count"] == 48
    assert (out / "img_emb" / "part_00000.npy").stat().st_mtime_ns == kept_mtime
    assert any("1 of 2 parts already embedded" in m for m in messages)
    assert any("1 shard(s) embedded on 1 Ray actor(s): 24 samples" in m for m in messages)
    assert np.allclose(np.load(out / "img_emb" / "part_00001.npy"), np.load(emoji_emb / "img_emb" / "part_00001.npy"),
                       atol=1e-5)
    assert not [p for p in out.rglob(".*tmp*")]  # no temporary left behind


def test_ray_parts_equal_local_ones_in_auto_precision(local_ray, tiny_run: Path, encoder, tmp_path: Path) -> None:
    shard = FIXTURE_SHARDS / "00000.tar"
    local = embed_shards(embed_config(tiny_run, tmp_path / "local", data=shard, batch_size=16), encoder=encoder,
                         log=lambda m: None)
    ray_info = _ray_embed(tiny_run, tmp_path / "ray", encoder, [], data=shard, precision="auto")
    assert ray_info["precision"] == local["precision"]  # bf16 where the CPU has it natively (resolved by the driver)
    for folder in ("img_emb", "text_emb"):
        want = np.load(tmp_path / "local" / folder / "part_00000.npy")
        assert np.allclose(np.load(tmp_path / "ray" / folder / "part_00000.npy"), want, atol=1e-6)
