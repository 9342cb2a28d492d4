"""clipline embed on the real emoji fixture shards: alignment of vectors and metadata, resume, fp16."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import Mock

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from retrieval import embed
from retrieval.embed import embed_shards
from retrieval.embedding_store import EmbeddingSet
from retrieval.errors import RetrievalError
from retrieval.shard_members import read_image
from tests.retrieval.conftest import FIXTURE_SHARDS, embed_config


def quiet(message: str) -> None:
    pass


def test_every_sample_embedded_once_with_its_location(emoji_emb: Path, encoder) -> None:
    info = json.loads((emoji_emb / "info.json").read_text())
    dataset = json.loads((FIXTURE_SHARDS / "dataset.json").read_text())
    assert info["count"] == dataset["num_samples"] == 48 and info["complete"] and info["dim"] == 256
    assert info["checkpoint_id"] == encoder.checkpoint_id
    emb = EmbeddingSet(emoji_emb)
    images = np.concatenate(list(emb.batches("image")))
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    rows = pq.read_table(emoji_emb / "metadata" / "part_00001.parquet").to_pylist()
    assert len({r["key"] for r in rows}) == len(rows) == 24
    # the recorded tar location decodes to the very image whose embedding is stored in that row
    chosen = [0, 7, 23]
    pictures = [read_image(FIXTURE_SHARDS / rows[i]["shard"], rows[i]["offset"], rows[i]["size"], rows[i]["member"])
                for i in chosen]
    again = encoder.encode_image(torch.stack([encoder.preprocess(p) for p in pictures])).numpy()
    stored = emb.part_array("image", "part_00001")[chosen]
    assert np.allclose(again, stored, atol=1e-4)
    texts = encoder.encode_text([rows[i]["caption"] for i in chosen]).numpy()
    assert np.allclose(texts, emb.part_array("text", "part_00001")[chosen], atol=1e-4)
    assert json.loads(rows[0]["json"])["key"] == rows[0]["key"] and rows[0]["label"]


def test_rerun_resumes_only_missing_parts(emoji_emb: Path, tmp_path: Path, tiny_run: Path, encoder) -> None:
    out = tmp_path / "emb"
    shutil.copytree(emoji_emb, out)
    kept = out / "img_emb" / "part_00000.npy"
    kept_mtime = kept.stat().st_mtime_ns
    removed = np.load(out / "img_emb" / "part_00001.npy")
    (out / "metadata" / "part_00001.parquet").unlink()  # an interrupted part: metadata is written last
    messages: list[str] = []
    info = embed_shards(embed_config(tiny_run, out, batch_size=16, precision="fp32"), encoder=encoder,
                        log=messages.append)
    assert kept.stat().st_mtime_ns == kept_mtime
    assert any("part_00000" in m and "skipped" in m for m in messages)
    assert np.allclose(np.load(out / "img_emb" / "part_00001.npy"), removed, atol=1e-5)
    assert info["count"] == 48 and not list(out.rglob(".*.tmp-*"))


def test_fp16_and_refusal_to_mix_checkpoints(tmp_path: Path, tiny_run: Path, encoder) -> None:
    out = tmp_path / "emb16"
    config = embed_config(tiny_run, out, batch_size=32, fp16=True)
    embed_shards(config, encoder=encoder, log=quiet)
    assert np.load(out / "img_emb" / "part_00000.npy").dtype == np.float16
    assert EmbeddingSet(out).count == 48
    other_checkpoint = SimpleNamespace(checkpoint_id="another-model")
    with pytest.raises(RetrievalError, match="fresh `out`"):
        embed_shards(config, encoder=other_checkpoint, log=quiet)  # type: ignore[arg-type]


def test_missing_data_dir_is_a_retrieval_error(tmp_path: Path, tiny_run: Path, encoder) -> None:
    with pytest.raises(RetrievalError, match="does not exist"):
        embed_shards(embed_config(tiny_run, tmp_path / "e", data=tmp_path / "nowhere"), encoder=encoder, log=quiet)


def test_each_process_embeds_its_own_shards(tmp_path: Path, tiny_run: Path, encoder,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert embed.shards_of_rank(5, 1, 2) == [1, 3] and embed.shards_of_rank(5, 0, 2) == [0, 2, 4]
    processes = Mock()
    monkeypatch.setattr(embed, "_processes", lambda: (1, 2, processes))  # as rank 1 of 2 under accelerate
    out = tmp_path / "emb"
    info = embed_shards(embed_config(tiny_run, out, batch_size=32), encoder=encoder, log=quiet)
    assert info == {} and processes.barrier.call_count == 1  # only rank 0 writes info.json, after everyone is done
    assert sorted(p.name for p in (out / "metadata").iterdir()) == ["part_00001.parquet"]


def test_a_truncated_shard_gives_a_partial_part_never_marked_complete(tmp_path: Path, tiny_run: Path,
                                                                      encoder) -> None:
    data = Path(shutil.copytree(FIXTURE_SHARDS, tmp_path / "shards"))
    whole = (data / "00001.tar").read_bytes()
    (data / "00001.tar").write_bytes(whole[: len(whole) // 2])
    config = embed_config(tiny_run, tmp_path / "emb", data=data)
    info = embed_shards(config, encoder=encoder, log=quiet)
    assert info["complete"] is False and info["partial"] == {"part_00001": "00001.tar"}
    assert 24 < info["count"] < 48 and EmbeddingSet(tmp_path / "emb").count == info["count"]  # readable rows kept
    (data / "00001.tar").write_bytes(whole)  # the shard repaired: the next run embeds that part again
    info = embed_shards(config, encoder=encoder, log=quiet)
    assert info["complete"] is True and info["partial"] == {} and info["count"] == 48
    assert not list((tmp_path / "emb" / "metadata").glob("*.partial.json"))
