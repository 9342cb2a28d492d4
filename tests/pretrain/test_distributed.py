"""Two processes (torchrun, CPU/gloo) train like one process on the same global batch, with the model
replicated (DDP) or sharded (FSDP, distributed.fsdp=true); checkpoints do not depend on which."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pretrain.checkpoint import list_checkpoints, read_train_state, read_weights
from pretrain.run_log import read_metrics
from tests.pretrain import distributed_helper

ROOT = Path(__file__).resolve().parents[2]
STEPS = distributed_helper.STEPS
# Sharded (FSDP) vs replicated (DDP) twins, measured: losses within 1.1e-7 relative, weights within 4.8e-7
# absolute after three AdamW steps, Adam moments within 4e-6 of their largest value (the gradient norm is
# summed in another order). Sharded gradients left unreduced move the loss by 3e-2 relative and weights by
# 2.6e-3; the SigLIP temperature and bias gradients left unaveraged, by 5e-4 and 1e-3.
LOSS_RTOL, WEIGHT_ATOL, MOMENT_RTOL = 1e-5, 1e-5, 1e-4


def loss_rows(run: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["logit_scale"]) for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def eval_row(run: Path) -> dict[str, float]:
    return next(r for r in read_metrics(run / "metrics.jsonl") if "image_feature_sum" in r)


def assert_same_checkpoint(got: Path, want: Path) -> None:
    """The newest checkpoints of two runs hold the same weights and optimizer state, whole."""
    got_ckpt, want_ckpt = list_checkpoints(got)[-1], list_checkpoints(want)[-1]
    got_weights, want_weights = read_weights(got_ckpt), read_weights(want_ckpt)
    assert got_weights.keys() == want_weights.keys()
    for key, value in want_weights.items():
        torch.testing.assert_close(got_weights[key], value, rtol=0, atol=WEIGHT_ATOL, msg=key)
    got_state, want_state = read_train_state(got_ckpt)["optimizer"], read_train_state(want_ckpt)["optimizer"]
    assert got_state["param_groups"] == want_state["param_groups"]
    assert got_state["state"].keys() == want_state["state"].keys()
    for index, moments in want_state["state"].items():
        for name, value in moments.items():  # step, exp_avg, exp_avg_sq: whole tensors, not shards
            got_value = got_state["state"][index][name]
            assert got_value.shape == value.shape, f"{index}.{name}"
            assert (got_value - value).abs().max() <= MOMENT_RTOL * value.abs().max(), f"{index}.{name}"


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
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
    yield out
    shutil.rmtree(out, ignore_errors=True)  # ~3.5 GB of checkpoints


# FSDP twins are compared with their DDP twins below (in one process, distributed.fsdp changes nothing)
@pytest.mark.parametrize("variant", [v for v in distributed_helper.VARIANTS if v not in distributed_helper.FSDP_TWINS])
def test_two_processes_match_one_process(variant: str, two_process_runs: Path, tmp_path: Path) -> None:
    distributed_helper.run(tmp_path, variant)
    assert json.loads((two_process_runs / variant / "summary.json").read_text())["processes"] == 2
    one, two = loss_rows(tmp_path), loss_rows(two_process_runs / variant)
    assert [r[0] for r in two] == list(range(1, STEPS + 1))
    for (_, loss1, scale1), (_, loss2, scale2) in zip(one, two):
        # the same loss at step 1 checks the gather; at steps 2-3 it checks the gradients too
        assert loss2 == pytest.approx(loss1, rel=1e-5)
        assert scale2 == pytest.approx(scale1, rel=1e-6)


def test_gradcache_accumulation_equals_the_large_batch(tmp_path: Path) -> None:
    distributed_helper.run(tmp_path / "big", "clip")
    distributed_helper.run(tmp_path / "cached", "clip-gradcache")
    for (_, big, _), (_, cached, _) in zip(loss_rows(tmp_path / "big"), loss_rows(tmp_path / "cached")):
        assert cached == pytest.approx(big, rel=1e-5)


@pytest.mark.parametrize("sharded", list(distributed_helper.FSDP_TWINS))
def test_sharded_training_matches_ddp(sharded: str, two_process_runs: Path) -> None:
    fsdp, ddp = two_process_runs / sharded, two_process_runs / distributed_helper.FSDP_TWINS[sharded]
    for (step, loss_fsdp, scale_fsdp), (_, loss_ddp, scale_ddp) in zip(loss_rows(fsdp), loss_rows(ddp)):
        assert loss_fsdp == pytest.approx(loss_ddp, rel=LOSS_RTOL), step
        assert scale_fsdp == pytest.approx(scale_ddp, rel=1e-6), step
    assert len(loss_rows(fsdp)) == STEPS
    assert json.loads((fsdp / "summary.json").read_text())["sharded"] is True
    assert json.loads((ddp / "summary.json").read_text())["sharded"] is False
    # in-loop evaluation of the sharded model (the weight average swapped in, where there is one)
    assert eval_row(fsdp) == pytest.approx(eval_row(ddp), rel=1e-5)
    assert_same_checkpoint(fsdp, ddp)


def test_sharded_run_resumes_a_whole_checkpoint(two_process_runs: Path) -> None:
    """A checkpoint written by DDP (or one process) resumed with FSDP: weights and optimizer split right."""
    fsdp, ddp = two_process_runs / "resumed-clip-fsdp", two_process_runs / "resumed-clip"
    assert [r[0] for r in loss_rows(fsdp)] == [STEPS + 1, STEPS + 2]
    assert json.loads((fsdp / "summary.json").read_text())["sharded"] is True
    for (_, loss_fsdp, _), (_, loss_ddp, _) in zip(loss_rows(fsdp), loss_rows(ddp)):
        assert loss_fsdp == pytest.approx(loss_ddp, rel=LOSS_RTOL)
    assert_same_checkpoint(fsdp, ddp)


def test_sharded_checkpoint_resumes_in_one_process(two_process_runs: Path, tmp_path: Path) -> None:
    """A checkpoint written with FSDP holds whole tensors: one process resumes it as it resumes DDP's
    (distributed.fsdp=true stays on: with one process there is nothing to shard)."""
    for name in ("clip-fsdp", "clip"):
        source = two_process_runs / name / "checkpoints" / f"step_{STEPS:08d}"
        distributed_helper.run(tmp_path / name, name, resume=source)
    assert json.loads((tmp_path / "clip-fsdp" / "summary.json").read_text())["sharded"] is False
    for (_, loss_fsdp, _), (_, loss_ddp, _) in zip(loss_rows(tmp_path / "clip-fsdp"), loss_rows(tmp_path / "clip")):
        assert loss_fsdp == pytest.approx(loss_ddp, rel=LOSS_RTOL)
    assert_same_checkpoint(tmp_path / "clip-fsdp", tmp_path / "clip")
