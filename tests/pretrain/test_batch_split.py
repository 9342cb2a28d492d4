"""A step's batch run as parts on threads gives the whole batch's loss and gradients."""

from __future__ import annotations

import threading
from pathlib import Path

import open_clip
import pytest
import torch

from pretrain import models
from pretrain.batch_split import BatchSplit, choose_batch_split, part_rows
from pretrain.config import TrainConfig, apply_overrides
from pretrain.distributed import Distributed
from pretrain.errors import PretrainError
from pretrain.grad_cache import forward_backward
from pretrain.losses import clip_loss
from pretrain.named_configs import named_config
from pretrain.precision import autocast
from pretrain.run_log import read_metrics
from pretrain.train import train
from pretrain.trained_towers import build_towers
from tests.pretrain.test_train import check_reference_loss, debug_config

CAPTIONS = ["a cat", "a red car with four wheels", "smiling face", "flag of a small island nation", "x",
            "two dogs", "a green apple on a white plate with a knife", "sun"]


def _loss_fn(out: dict[str, torch.Tensor]) -> torch.Tensor:
    return clip_loss(out["image_features"], out["text_features"], out["logit_scale"])


def _towers(run: TrainConfig) -> models.TwoTower:
    """The run's towers as the trainer builds them on a CPU (for clip-tiny-64: explicit attention, bias-fused
    linears, in-place embedding gradients: each must stay right when two threads run it)."""
    torch.manual_seed(0)
    return build_towers(run, torch.device("cpu"), sharded=False, processes=1)


def _step(towers: models.TwoTower, run, precision: str) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    images = torch.randn(len(CAPTIONS), 3, 64, 64)
    tokens = open_clip.get_tokenizer("clip-tiny-64")(CAPTIONS)
    towers.zero_grad(set_to_none=True)
    loss = run(towers, [(images, tokens)], loss_fn=_loss_fn, autocast=autocast(precision, torch.device("cpu")),
               dist=Distributed(cpu=True))
    return float(loss), {name: p.grad.clone() for name, p in towers.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("parts", [2, 3])
def test_parts_give_the_whole_batch_loss_and_gradients(parts: int) -> None:
    towers = _towers(apply_overrides(named_config("tiny"), ["model.text_buckets=2"]))
    want_loss, want = _step(towers, forward_backward, "fp32")
    got_loss, got = _step(towers, BatchSplit(parts, threads_each=1).forward_backward, "fp32")
    assert got_loss == pytest.approx(want_loss, abs=1e-6)
    assert got.keys() == want.keys() and len(got) > 40
    for name, grad in want.items():  # other summation orders: ~3e-6 of the largest entry
        assert (got[name] - grad).abs().max() <= 1e-5 * grad.abs().max(), name
    # a wrong share of the temperature's gradient (each part counting it whole) would be off by `parts`
    assert got["clip.logit_scale"].item() == pytest.approx(want["clip.logit_scale"].item(), rel=1e-4)


def test_bf16_parts_match_the_whole_batch_and_run_on_their_own_threads() -> None:
    towers = _towers(named_config("tiny"))
    seen: list[tuple[int, int, bool]] = []
    towers.register_forward_pre_hook(lambda *_: seen.append(
        (threading.get_ident(), torch.get_num_threads(), torch.is_autocast_enabled("cpu"))))
    want_loss, want = _step(towers, forward_backward, "bf16")
    seen.clear()
    got_loss, got = _step(towers, BatchSplit(2, threads_each=1).forward_backward, "bf16")
    assert len({thread for thread, _, _ in seen}) == 2 and all(n == 1 and cast for _, n, cast in seen)
    assert got_loss == pytest.approx(want_loss, abs=2e-2)
    for name, grad in want.items():  # bf16 rounds other row counts differently: up to ~3 % of a gradient's
        # norm on the Intel AMX host (its largest entry 5 % off on a small bias); a lost half: ~50 %
        assert (got[name] - grad).norm() <= 1e-1 * grad.norm(), name


def test_part_rows_cover_the_batch_in_order() -> None:
    assert part_rows(10, 3) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert part_rows(128, 2) == [slice(0, 64), slice(64, 128)]


def test_an_error_in_one_part_is_raised_after_every_part_finished() -> None:
    finished = []

    def work(i: int) -> int:
        if i == 1:
            raise ValueError("part 1 failed")
        finished.append(i)
        return i

    split = BatchSplit(3, threads_each=1)
    with pytest.raises(ValueError, match="part 1 failed"):
        split._each(work)
    assert sorted(finished) == [0, 2]
    assert split._each(lambda i: i * 10) == [0, 10, 20]


def _choice(*overrides: str, config: str = "tiny-debug", threads: int = 2) -> tuple[int, str]:
    run = apply_overrides(named_config(config), ["data.batch_size=128", *overrides])
    towers = _towers(run)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return choose_batch_split(run, towers, device=torch.device("cpu"), processes=1)
    finally:
        torch.set_num_threads(before)


def test_auto_splits_in_two_only_where_the_step_allows_it() -> None:
    assert _choice() == (2, "2 intra-op threads")
    assert _choice(threads=1)[0] == 1
    assert _choice("data.batch_size=16")[0] == 1
    assert _choice("data.accum_steps=2") == (1, "it needs data.accum_steps=1")
    assert _choice("deterministic=true")[0] == 1
    assert _choice("patch_dropout=0.5") == (1, "the model samples dropout in its forward")
    assert _choice("batch_split=3") == (3, "requested")


def test_a_locked_minilm_tower_splits_a_trained_one_or_batch_norm_does_not() -> None:
    assert _choice(config="emoji-lit-minilm")[0] == 2  # locked: runs in eval mode, no dropout
    assert _choice("model.lock_text=false", config="emoji-lit-minilm") == \
        (1, "the model samples dropout in its forward")
    assert _choice(config="emoji-lit-rn") == (1, "batch norm statistics are taken over the whole batch")


def test_a_request_that_cannot_be_honoured_is_refused_in_one_line() -> None:
    with pytest.raises(PretrainError, match=r"^batch_split=2 cannot be used here: it needs data.accum_steps=1; "
                                            r"set batch_split=1$"):
        _choice("batch_split=2", "data.accum_steps=2")
    with pytest.raises(PretrainError, match="more parts than data.batch_size=128"):
        _choice("batch_split=129")


def test_a_split_run_follows_the_reference_loss_curve(emoji_shards: Path, tmp_path: Path) -> None:
    train(debug_config(tmp_path, f"train_data={emoji_shards}", "threads=2", "batch_split=2"))
    check_reference_loss([r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")], regenerate=False)
