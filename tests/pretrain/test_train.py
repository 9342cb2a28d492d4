"""The training loop end to end on tiny-debug: outputs, exact resume, signals, faults."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch

from data_tools.atomic_write import write_json_atomic
from pretrain.checkpoint import list_checkpoints, read_train_state, read_weights
from pretrain.config import apply_overrides
from pretrain.named_configs import named_config
from pretrain.errors import PretrainError
from pretrain.run_log import read_metrics
from pretrain.train import train
from tests.pretrain.distributed_helper import global_batches
from tests.pretrain.kill_helper import SignalAt
from tests.tar_writing import write_tar

HELPERS = Path(__file__).parent
ROOT = HELPERS.parent.parent
REFERENCE_LOSS = ROOT / "tests" / "fixtures" / "reference_loss_tiny_debug.json"
# Measured: another summation order (two threads instead of one) moves the six losses by < 1e-6;
# another data order (shuffle buffer 1), init seed or a 10 % different learning rate moves some
# step by 5e-4 to 0.4, a wrong loss by more.
LOSS_TOLERANCE = 1e-4


def debug_config(out: Path, *extra: str):
    return apply_overrides(named_config("tiny-debug"), [f"out={out}", "threads=1", *extra])


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def check_reference_loss(got: list[float], regenerate: bool) -> None:
    """Compare with the recorded curve (torchtitan keeps one); `--regenerate-reference-loss` rewrites it."""
    if regenerate:
        write_json_atomic(REFERENCE_LOSS, {
            "what": "per-step training loss of tiny-debug (fp32, deterministic=true, threads=1) "
                    "on tests/fixtures/emoji_shards",
            "regenerate": "pytest tests/pretrain/test_train.py -k test_run_writes --regenerate-reference-loss",
            "torch": torch.__version__, "open_clip": open_clip.__version__, "losses": got,
        })
    want = json.loads(REFERENCE_LOSS.read_text())["losses"]
    assert got == pytest.approx(want, abs=LOSS_TOLERANCE), (
        "the loss curve moved: if the recipe, loss or data order changed on purpose, rerun with "
        "--regenerate-reference-loss and commit the file")


def test_run_writes_metrics_checkpoints_events_and_plot(emoji_shards: Path, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    result = train(debug_config(tmp_path, f"train_data={emoji_shards}", "deterministic=true"))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert set(rows[0]) == {"step", "loss", "lr", "logit_scale", "samples_per_s", "epoch"}
    assert [r["lr"] for r in rows[:2]] == [0.0005, 0.001]  # linear warmup over 2 steps
    assert rows[-1]["lr"] < rows[2]["lr"]  # cosine decay
    assert rows[-1]["epoch"] == pytest.approx(1.0)  # 6 batches of 8 = the 48 fixture samples
    check_reference_loss([r["loss"] for r in rows], request.config.getoption("--regenerate-reference-loss"))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000006"]
    assert result.checkpoint == tmp_path / "checkpoints" / "step_00000006"
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert any((tmp_path / "tensorboard").iterdir())
    assert json.loads((tmp_path / "config.json").read_text())["data"]["train_data"] == str(emoji_shards)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step"] == 6 and summary["precision"] == "fp32" and summary["peak_rss_mb"] > 0


def test_sigkilled_run_resumes_with_the_uninterrupted_loss_sequence(emoji_shards: Path, tmp_path: Path) -> None:
    # patch dropout and augmentation both draw random numbers between batches: resume must restore them
    options = [f"train_data={emoji_shards}", "steps=8", "deterministic=true", "threads=1", "patch_dropout=0.5"]
    train(debug_config(tmp_path / "straight", *options))
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, str(HELPERS / "kill_helper.py"), f"out={killed}", *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [p.name for p in list_checkpoints(killed)] == ["step_00000003"]
    assert max(step for step, _ in losses(killed)) == 5  # steps 4-5 ran but were never saved
    train(debug_config(killed, *options, "resume=latest"))
    expected = losses(tmp_path / "straight")
    assert [s for s, _ in losses(killed)] == list(range(1, 9))
    for (_, got), (_, want) in zip(losses(killed), expected):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7)


def in_memory(epoch: int) -> list[dict]:
    return global_batches(4)


def test_sigterm_saves_a_checkpoint_then_stops(tmp_path: Path) -> None:
    config = debug_config(tmp_path, "steps=20", "eval_every=1", "checkpoint_every=100")
    result = train(config, evaluators=[SignalAt(signal.SIGTERM, 2)], make_epoch=in_memory)
    # the signal arrives during step 2's evaluation; step 3 completes, then the loop saves and stops
    assert result.stopped_by == "SIGTERM" and result.step == 3
    assert result.checkpoint == tmp_path / "checkpoints" / "step_00000003"
    assert read_train_state(result.checkpoint)["step"] == 3


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    def poisoned(epoch: int) -> list[dict]:
        batches = global_batches(4)
        batches[2]["image"][0, 0, 0, 0] = float("nan")
        return batches

    with pytest.raises(PretrainError, match=r"loss is nan at step 3.*step_00000002"):
        train(debug_config(tmp_path, "checkpoint_every=2", "steps=6"), make_epoch=poisoned)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002"]


def test_patch_dropout_and_grad_checkpointing_train(tmp_path: Path) -> None:
    result = train(debug_config(tmp_path, "patch_dropout=0.5", "grad_checkpointing=true", "steps=2"),
                   make_epoch=in_memory)
    assert result.step == 2 and torch.isfinite(torch.tensor(result.loss))


def test_corrupt_sample_is_skipped_and_counted(emoji_shards: Path, tmp_path: Path) -> None:
    shards = shutil.copytree(emoji_shards, tmp_path / "shards")
    write_tar(shards / "00000.tar", [("broken_1.jpg", b"not a jpeg at all"), ("broken_1.txt", b"a broken image")],
              mode="a")
    result = train(debug_config(tmp_path / "run", f"train_data={shards}"))  # one epoch: every sample read
    assert result.step == 6
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert sum(summary["skipped_samples"].values()) == 1, summary["skipped_samples"]


def test_weight_average_is_checkpointed_and_resumes_exactly(tmp_path: Path) -> None:
    options = ["steps=6", "checkpoint_every=3", "ema_decay=0.9", "deterministic=true"]
    straight = train(debug_config(tmp_path / "straight", *options), make_epoch=in_memory)
    state = read_train_state(straight.checkpoint)
    averaged, raw = read_weights(straight.checkpoint), state["raw_weights"]
    assert state["ema"]["updates"] == 6 and set(raw) == set(state["ema"]["shadow"])
    # the checkpoint's model weights are the average, not the last step's weights
    assert not torch.equal(averaged["visual.conv1.weight"], raw["visual.conv1.weight"])
    resumed = train(debug_config(tmp_path / "resumed", *options,
                                 f"resume={tmp_path / 'straight' / 'checkpoints' / 'step_00000003'}"),
                    make_epoch=in_memory)
    assert resumed.step == 6
    for key, value in read_weights(resumed.checkpoint).items():
        assert torch.allclose(value, averaged[key], atol=1e-6), key
    for key, value in read_train_state(resumed.checkpoint)["raw_weights"].items():
        assert torch.allclose(value, raw[key], atol=1e-6), key
