"""The server's query encoder set-up: bf16 weights cast once give autocast's vectors bit for bit."""

from __future__ import annotations

import copy
import os
import tarfile

import pytest
import torch
from torch import nn

from pretrain import models
from pretrain.encoder import Encoder
from pretrain.precision import autocast
from retrieval.serve.query_encoder import prepare_query_encoder, share_cores_between_workers, text_linear_layers
from tests.retrieval.conftest import FIXTURE_SHARDS

QUERIES = ["cat", "a red apple", "smiling face with sunglasses", "flag of japan", "a rocket in space",
           "grinning face with big eyes", "a yellow star", "pile of poo"]


def fixture_captions() -> list[str]:
    captions = []
    for shard in sorted(FIXTURE_SHARDS.glob("*.tar")):
        with tarfile.open(shard) as tar:
            captions += [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")]
    return captions


def encoder_of(clip: nn.Module, precision: str | None = None, name: str = "clip-tiny-64-minilm") -> Encoder:
    """A copy of `clip` as an Encoder; with `precision`, set up as the server sets up its query encoder."""
    encoder = Encoder.from_model(copy.deepcopy(clip), model_name=name, device="cpu")
    if precision:
        prepare_query_encoder(encoder, precision)
    return encoder


def bf16_vectors(encoder: Encoder, texts: list[str]) -> torch.Tensor:
    with autocast("bf16", torch.device("cpu"))():
        return encoder.encode_text(texts)


def test_bf16_weights_cast_once_give_the_autocast_vectors_bit_for_bit(minilm_clip: nn.Module) -> None:
    plain, cast = encoder_of(minilm_clip), encoder_of(minilm_clip, "bf16")
    layers = text_linear_layers(cast.model)
    assert layers and all(layer.weight.dtype == torch.bfloat16 for layer in layers)
    assert all(p.dtype == torch.float32 for p in cast.model.visual.parameters())  # image tower untouched
    texts = QUERIES + fixture_captions()[:8]
    expected, got = bf16_vectors(plain, texts), bf16_vectors(cast, texts)
    assert got.dtype == torch.float32
    assert torch.equal(expected, got)
    assert not torch.equal(expected, plain.encode_text(texts))  # bf16 really ran (fp32 differs)


def test_fp32_and_open_clip_text_towers_are_left_alone(minilm_clip: nn.Module) -> None:
    encoder = encoder_of(minilm_clip, "fp32")
    assert all(p.dtype == torch.float32 for p in encoder.model.parameters())
    torch.manual_seed(0)
    tiny = encoder_of(models.create_open_clip("clip-tiny-64"), "bf16", name="clip-tiny-64")  # casting changes its maths
    assert all(p.dtype == torch.float32 for p in tiny.model.parameters())


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_workers_share_the_cores(workers: int) -> None:
    before = torch.get_num_threads()
    try:
        threads = share_cores_between_workers(workers)
        assert threads == torch.get_num_threads() == max(1, len(os.sched_getaffinity(0)) // workers)
    finally:
        torch.set_num_threads(before)
