"""Weight-decay groups, the schedule, and the precision choice."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pretrain import models, precision
from pretrain.optim import WarmupCosine, build_optimizer, load_optimizer_state, param_groups
from pretrain.config import OptimConfig


def test_no_weight_decay_on_norms_biases_temperature_and_positions() -> None:
    towers = models.build_model("clip-tiny-64")
    names = {id(p): n for n, p in towers.named_parameters()}
    decay, no_decay = param_groups(towers, 0.2)
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert "clip.logit_scale" in skipped and "clip.positional_embedding" in skipped
    assert "clip.visual.class_embedding" in skipped and "clip.visual.positional_embedding" in skipped
    assert all("ln_" not in n and not n.endswith("bias") for n in decayed)
    assert "clip.visual.transformer.resblocks.0.mlp.c_fc.weight" in decayed and "clip.text_projection" in decayed
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0


def test_locked_parameters_are_not_optimized() -> None:
    towers = models.build_model("clip-tiny-64-minilm", lock_text=True)
    optimizer = build_optimizer(towers, OptimConfig(), torch.device("cpu"))
    optimized = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert optimized == sum(p.numel() for p in towers.parameters() if p.requires_grad)


def test_warmup_then_cosine_by_steps() -> None:
    schedule = WarmupCosine(lr=1.0, min_lr=0.1, warmup_steps=4, total_steps=14)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(14) == pytest.approx(0.1)


def test_cosine_by_wall_clock_ends_with_the_budget() -> None:
    schedule = WarmupCosine(lr=1.0, min_lr=0.0, warmup_steps=1, total_steps=10**6, total_seconds=100.0)
    schedule(1, elapsed_s=10.0)  # warmup ended at 10 s
    assert schedule(50, elapsed_s=55.0) == pytest.approx(0.5)
    assert schedule(99, elapsed_s=100.0) == pytest.approx(0.0)


def test_timed_warmup_ends_after_a_tenth_of_the_budget() -> None:
    schedule = WarmupCosine(lr=1.0, min_lr=0.0, warmup_steps=100, total_steps=10**6, total_seconds=100.0)
    assert schedule(4, elapsed_s=5.0) == pytest.approx(0.5)  # 5 s of a 10 s warmup (step 5/100 is less)
    assert schedule(9, elapsed_s=10.0) == pytest.approx(1.0)  # warmup over at 10% of the budget
    assert schedule(50, elapsed_s=55.0) == pytest.approx(0.5)


def test_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert precision.choose_precision("auto", cpu)[0] == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    assert precision.choose_precision("auto", cpu)[0] == "fp32"  # emulated bf16 is slower than fp32
    assert precision.choose_precision("fp32", cpu)[0] == "fp32"
    with precision.autocast("bf16", cpu)():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_resumed_optimizer_state_takes_the_layout_of_channels_last_parameters() -> None:
    """A saved AdamW state is contiguous; loaded as is beside a channels-last parameter, the fused kernel
    updates it wrongly. load_optimizer_state gives the moments the parameter's layout: the resumed step
    equals the same step on a contiguous parameter."""
    torch.manual_seed(0)
    weight, grads = torch.randn(4, 3, 5, 5), [torch.randn(4, 3, 5, 5) for _ in range(2)]

    def make(channels_last: bool) -> tuple[torch.nn.Parameter, torch.optim.AdamW]:
        param = torch.nn.Parameter(weight.clone().contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format))
        return param, torch.optim.AdamW([param], lr=0.1, fused=True)

    first, first_optimizer = make(False)
    first.grad = grads[0].clone()
    first_optimizer.step()
    results = []
    for channels_last in (False, True):
        param, optimizer = make(channels_last)
        param.data.copy_(first.data)
        load_optimizer_state(optimizer, copy.deepcopy(first_optimizer.state_dict()))  # as read from a file
        param.grad = torch.empty_like(param).copy_(grads[1])
        optimizer.step()
        results.append(param.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-6)
