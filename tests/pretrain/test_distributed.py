"""Two processes (accelerate launch, CPU/gloo) train like one process on the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.run_log import read_metrics
from tests.pretrain import distributed_helper

ROOT = Path(__file__).resolve().parents[2]


def loss_rows(run: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["logit_scale"]) for r in read_metrics(run / "metrics.jsonl")]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # torchrun, not `accelerate launch --cpu`: accelerate 1.x starts a single process for --cpu
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torch's launcher torchrun is not installed")
    out = tmp_path_factory.mktemp("two")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", str(ROOT / "tests/pretrain/distributed_helper.py"), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("variant", list(distributed_helper.VARIANTS))
def test_two_processes_match_one_process(variant: str, two_process_runs: Path, tmp_path: Path) -> None:
    distributed_helper.run(tmp_path, variant)
    assert json.loads((two_process_runs / variant / "summary.json").read_text())["processes"] == 2
    one, two = loss_rows(tmp_path), loss_rows(two_process_runs / variant)
    assert [r[0] for r in two] == [1, 2, 3]
    for (_, loss1, scale1), (_, loss2, scale2) in zip(one, two):
        # the same loss at step 1 checks the gather; at steps 2-3 it checks the gradients too
        assert loss2 == pytest.approx(loss1, rel=1e-5)
        assert scale2 == pytest.approx(scale1, rel=1e-6)


def test_gradcache_accumulation_equals_the_large_batch(tmp_path: Path) -> None:
    distributed_helper.run(tmp_path / "big", "clip")
    distributed_helper.run(tmp_path / "cached", "clip-gradcache")
    for (_, big, _), (_, cached, _) in zip(loss_rows(tmp_path / "big"), loss_rows(tmp_path / "cached")):
        assert cached == pytest.approx(big, rel=1e-5)
