"""clipline embed's fast path: fp32 is the previous path's vectors, bf16 is within cosine 0.999 of them, and
captions encoded sorted by length come back as open_clip encodes them one by one, in sample order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from evaluate.shard_encoding import EncodingConfig, ShardImageFeatures
from pretrain import precision
from retrieval.embed import embed_shards
from retrieval.errors import RetrievalError
from tests.retrieval.conftest import FIXTURE_SHARDS, PARTS, embed_config


def _open_clip_text(encoder, captions: list[str]) -> np.ndarray:
    """Each caption alone through open_clip's own encode_text, full context padding. (N, D)"""
    with torch.no_grad():
        features = torch.cat([encoder.model.encode_text(encoder.tokenizer([c])) for c in captions])  # (N, D)
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def _arrays(emb: Path, folder: str) -> np.ndarray:
    return np.concatenate([np.load(emb / folder / f"{part}.npy") for part in PARTS])  # (N, D)


def test_fp32_images_are_the_previous_path_bit_for_bit_and_texts_open_clips_in_order(emoji_emb: Path,
                                                                                        encoder) -> None:
    assert json.loads((emoji_emb / "info.json").read_text())["precision"] == "fp32"
    for part, shard in zip(PARTS, ("00000.tar", "00001.tar")):
        # the previous embed path: the evaluation loop's image features, batch by batch (batch 16, as emoji_emb)
        before = np.concatenate([features.numpy() for features, _ in
                                 ShardImageFeatures(encoder, FIXTURE_SHARDS / shard,
                                                    EncodingConfig(batch_size=16, num_workers=0))])
        assert np.array_equal(np.load(emoji_emb / "img_emb" / f"{part}.npy"), before)
        # captions were encoded shard-wide sorted by length; every row is its own caption's open_clip vector.
        # Not bit for bit: which captions share a matmul changes its rounding (max difference measured 2e-7)
        captions = pq.read_table(emoji_emb / "metadata" / f"{part}.parquet").column("caption").to_pylist()
        assert len(captions) == 24 and len(set(captions)) == 12  # two vendors' drawings of each concept
        texts = np.load(emoji_emb / "text_emb" / f"{part}.npy")
        assert np.abs(texts - _open_clip_text(encoder, captions)).max() < 1e-6


def test_length_sorted_text_gives_each_caption_its_vector_in_input_order(encoder) -> None:
    captions = ["a", "flag of a small island in the pacific ocean with a star", "red heart", "x",
                "smiling face with open mouth and cold sweat", "cat", "two dogs", "a very long caption " * 3]
    tokens = encoder.tokenizer(captions)  # (8, 32)
    want = _open_clip_text(encoder, captions)
    assert np.abs(encoder.encode_tokens(tokens, chunk=3).numpy() - want).max() < 1e-6
    order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(0))
    shuffled = encoder.encode_tokens(tokens[order], chunk=3).numpy()
    assert np.abs(shuffled - want[order.numpy()]).max() < 1e-6
    assert np.abs(encoder.encode_text(captions).numpy() - want).max() < 1e-6  # encode_text takes the same path


def test_bf16_is_within_cosine_0_999_of_fp32_row_by_row(emoji_emb: Path, tiny_run: Path, encoder,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "emb"
    messages: list[str] = []
    info = embed_shards(embed_config(tiny_run, out, batch_size=16, precision="bf16"), encoder=encoder,
                        log=messages.append)
    assert info["precision"] == "bf16" and "precision: bf16 (requested)" in messages
    for part in PARTS:  # same rows, same order
        assert pq.read_table(out / "metadata" / f"{part}.parquet").equals(
            pq.read_table(emoji_emb / "metadata" / f"{part}.parquet"))
    for folder in ("img_emb", "text_emb"):
        low, full = _arrays(out, folder), _arrays(emoji_emb, folder)
        assert np.allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-6)  # unit vectors again after bf16
        cosine = (low * full).sum(axis=1)
        assert cosine.min() > 0.999, (folder, cosine.min())
        assert np.abs(low - full).max() > 1e-4  # bf16 really ran: fp32 would agree to ~1e-7


def test_auto_precision_follows_the_cpu_and_is_logged(tmp_path: Path, tiny_run: Path, encoder,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    messages: list[str] = []
    info = embed_shards(embed_config(tiny_run, tmp_path / "emb", data=FIXTURE_SHARDS / "00000.tar"), encoder=encoder,
                        log=messages.append)
    assert info["precision"] == "fp32" and info["count"] == 24
    assert any(m.startswith("precision: fp32 (CPU without native bf16") for m in messages)
    with pytest.raises(RetrievalError, match="precision must be auto, bf16 or fp32"):
        embed_shards(embed_config(tiny_run, tmp_path / "e2", precision="fp16"), encoder=encoder, log=messages.append)
