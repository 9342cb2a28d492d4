"""Suite-wide settings: offline, deterministic, small thread pools; the shared random checkpoint."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# MKL's fp32 matmuls on Intel CPUs pick kernels by the operands' memory alignment, so the same product can
# differ in its last bit from one allocation to the next; tests that compare two paths bit for bit need it not to
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import pytest  # noqa: E402

FIXTURE_SHARDS = Path(__file__).parent / "fixtures" / "emoji_shards"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate-reference-loss", action="store_true",
                     help="rewrite tests/fixtures/reference_loss_tiny_debug.json from this run "
                          "(after a deliberate change to the tiny-debug recipe, the loss or the data order)")


def save_random_checkpoint(run_dir: Path, name: str, *, seed: int = 0, step: int = 1,
                           adjust: Callable[[torch.nn.Module], object] | None = None, **create_options) -> Path:
    """Seed torch, build open_clip `name` (`create_options` go to `create_open_clip`), run `adjust(model)` under
    no_grad if given, and save it as `clipline pretrain` would at `step`; returns `run_dir`."""
    import torch

    from pretrain import checkpoint, models

    torch.manual_seed(seed)
    clip = models.create_open_clip(name, **create_options)
    if adjust is not None:
        with torch.no_grad():
            adjust(clip)
    checkpoint.save_checkpoint(run_dir, step=step, state_dict=clip.state_dict(), model_info=models.model_info(name, clip))
    return run_dir


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiled kernels (retrieval/index/native.py) go to a temp dir, not the user's cache."""
    path = tmp_path_factory.mktemp("kernels")
    os.environ["CLIPLINE_KERNEL_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def emoji_shards() -> Path:
    """Tiny real emoji shard set checked in under tests/fixtures/."""
    if not FIXTURE_SHARDS.exists():
        pytest.skip("fixture shards not built yet")
    return FIXTURE_SHARDS


@pytest.fixture(scope="module")
def local_ray():
    """A Ray of 2 CPUs on this machine for the module's tests (skipped when Ray is not installed)."""
    ray = pytest.importorskip("ray")
    # a busy machine starts Ray's agents slowly; the raylet's default wait for them is short
    os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")
    for attempt in range(3):  # Ray gives its node 30 s to start, which a loaded 2-core machine can miss
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as err:  # noqa: BLE001 - Ray raises plain Exception for a node that timed out starting
            ray.shutdown()
            if attempt == 2:
                if "timed out during startup" in str(err):  # the machine, not the code under test
                    pytest.skip(f"Ray could not start a local node on this loaded machine: {err}")
                raise
    yield ray
    ray.shutdown()
