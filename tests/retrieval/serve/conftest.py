"""The colour shard every server test module reads (see fakes.py), written once per module, and a MiniLM model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.retrieval.serve.fakes import write_color_shard


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_color_shard(tmp_path_factory.mktemp("colors"))


@pytest.fixture(scope="module")
def minilm_clip() -> torch.nn.Module:
    """clip-tiny-64-minilm: the pretrained MiniLM text tower (offline, from its package), seeded projection."""
    import torch

    from pretrain import models

    torch.manual_seed(0)
    return models.create_open_clip("clip-tiny-64-minilm")
