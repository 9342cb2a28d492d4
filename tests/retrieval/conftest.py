"""A tiny real checkpoint, the emoji fixture shards embedded with it, and an index of them.

Session-scoped: building the model and embedding 48 samples once keeps the
package's tests fast. The model is random (seeded), which is enough to check
that search returns what exact search over the same embeddings returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retrieval.embed import EmbedConfig, embed_shards

FIXTURE_SHARDS = Path(__file__).resolve().parents[1] / "fixtures" / "emoji_shards"
PARTS = ("part_00000", "part_00001")  # the embedding parts of its two shards


def embed_config(run: Path, out: Path, data: Path = FIXTURE_SHARDS, **fields: Any) -> EmbedConfig:
    """`clipline embed` of `data` (default: the emoji fixture) with `run`'s checkpoint into `out`, no loader workers."""
    return EmbedConfig(checkpoint=str(run), data=str(data), out=str(out), num_workers=0, **fields)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import save_random_checkpoint

    return save_random_checkpoint(tmp_path_factory.mktemp("tiny_run"), "clip-tiny-64")


@pytest.fixture(scope="session")
def encoder(tiny_run: Path):
    from pretrain.encoder import Encoder

    return Encoder.load(tiny_run)


@pytest.fixture(scope="session")
def emoji_emb(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, encoder) -> Path:
    out = tmp_path_factory.mktemp("emoji") / "emb"
    # fp32: the vectors tests compare against `encoder` (bf16 is tested in test_embed_precision.py)
    embed_shards(embed_config(tiny_run, out, batch_size=16, precision="fp32"), encoder=encoder, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def emoji_index(tmp_path_factory: pytest.TempPathFactory, emoji_emb: Path) -> Path:
    from retrieval.index.build import IndexBuildConfig, build_index

    out = tmp_path_factory.mktemp("emoji_index") / "index"
    build_index(IndexBuildConfig(emb=str(emoji_emb), out=str(out), modality="both"), log=lambda m: None)
    return out


@pytest.fixture(autouse=True, scope="session")
def _one_faiss_thread() -> None:
    """The CPU is shared with other test runs: OpenMP threads spinning at barriers slow everyone."""
    import faiss

    faiss.omp_set_num_threads(1)
