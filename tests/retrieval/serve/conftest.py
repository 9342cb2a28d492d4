"""The colour shard every server test module reads (see fakes.py), written once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.retrieval.serve.fakes import write_color_shard


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_color_shard(tmp_path_factory.mktemp("colors"))
