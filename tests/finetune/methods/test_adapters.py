"""CLIP-Adapter, Tip-Adapter(-F), WiSE-FT and full fine-tuning on problems with known answers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from finetune.methods.clip_adapter import ClipAdapterConfig, ClipAdapterHead, fit_clip_adapter
from finetune.methods.full_finetune import FullFinetuneConfig, encode_images, fit_full_finetune
from finetune.methods.head_training import HeadTrainingConfig
from finetune.methods.linear_probe import LinearHead, fit_linear_probe
from finetune.methods.tip_adapter import TipAdapterConfig, TipAdapterHead, build_cache, fit_tip_adapter, fit_tip_adapter_f
from finetune.methods.wise_ft import WiseFtConfig, fit_wise_ft
from tests.finetune.fewshot_data import accuracy, cluster_task, image_task, zeroshot_logits


# --- CLIP-Adapter -------------------------------------------------------------------------------

def test_clip_adapter_at_ratio_zero_is_zero_shot() -> None:
    task, eval_x, _ = cluster_task()
    head = ClipAdapterHead(task.zeroshot_weights, task.logit_scale, ratio=0.0, adapt_text=True)
    assert torch.allclose(head(eval_x), zeroshot_logits(task, eval_x), atol=1e-5)


def test_clip_adapter_learns_what_zero_shot_gets_wrong() -> None:
    task, eval_x, eval_y = cluster_task(zeroshot="wrong")
    fitted = fit_clip_adapter(task)
    assert accuracy(zeroshot_logits(task, eval_x), eval_y) < 0.05
    assert accuracy(fitted.head(eval_x).detach(), eval_y) > 0.95
    assert fitted.hyperparameters["ratio"] in ClipAdapterConfig().ratios


def test_clip_adapter_is_deterministic_per_seed() -> None:
    task, eval_x, _ = cluster_task(zeroshot="random")
    cfg = ClipAdapterConfig(ratios=[0.5], training=HeadTrainingConfig(min_steps=20, epochs=1))
    a, b = fit_clip_adapter(task, cfg).head(eval_x), fit_clip_adapter(task, cfg).head(eval_x)
    assert torch.equal(a, b)


# --- Tip-Adapter --------------------------------------------------------------------------------

def test_tip_adapter_with_alpha_zero_is_zero_shot() -> None:
    task, eval_x, _ = cluster_task()
    head = build_cache(task)
    head.alpha, head.beta = 0.0, 5.0
    assert torch.allclose(head(eval_x), zeroshot_logits(task, eval_x))


def test_tip_adapter_with_beta_zero_adds_a_constant_per_image() -> None:
    task, eval_x, _ = cluster_task(shots=4)  # balanced shots: every class gets affinity 1 * 4 shots
    head = build_cache(task)
    head.alpha, head.beta = 0.7, 0.0
    delta = head(eval_x) - zeroshot_logits(task, eval_x)
    assert torch.allclose(delta, torch.full_like(delta, 0.7 * 4), atol=1e-5)
    assert torch.equal(head(eval_x).argmax(1), zeroshot_logits(task, eval_x).argmax(1))


def test_cache_logits_match_the_formula_across_chunks() -> None:
    task, _, _ = cluster_task(shots=3)
    head = build_cache(task)
    queries = F.normalize(torch.randn(9000, task.dim), dim=-1)  # more than one affinity block
    expected = torch.exp(-2.5 * (1 - queries @ task.train_x.T)) @ F.one_hot(task.train_y).float()
    assert torch.allclose(head.cache_logits(queries, beta=2.5), expected, atol=1e-5)


def test_tip_adapter_fixes_a_wrong_zero_shot_head_without_training() -> None:
    task, eval_x, eval_y = cluster_task(zeroshot="wrong")
    fitted = fit_tip_adapter(task)
    assert fitted.hyperparameters["alpha"] > 0
    assert accuracy(fitted.head(eval_x).detach(), eval_y) > 0.95


def test_tip_adapter_keeps_a_right_zero_shot_head() -> None:
    task, eval_x, eval_y = cluster_task(zeroshot="right")
    zero_shot = accuracy(zeroshot_logits(task, eval_x), eval_y)
    assert accuracy(fit_tip_adapter(task).head(eval_x).detach(), eval_y) >= zero_shot - 0.01


def test_tip_adapter_f_tunes_the_keys_and_stays_accurate() -> None:
    task, eval_x, eval_y = cluster_task(zeroshot="wrong")
    cfg = TipAdapterConfig(training=HeadTrainingConfig(min_steps=100))
    fitted = fit_tip_adapter_f(task, cfg)
    assert isinstance(fitted.head, TipAdapterHead)
    assert not torch.allclose(fitted.head.keys, task.train_x)
    assert accuracy(fitted.head(eval_x).detach(), eval_y) > 0.95


# --- WiSE-FT (head) -----------------------------------------------------------------------------

def test_wise_ft_endpoints_are_zero_shot_and_fine_tuned() -> None:
    task, eval_x, eval_y = cluster_task(zeroshot="random", spread=0.3)
    fitted = fit_wise_ft(task)
    assert sorted(fitted.curve) == WiseFtConfig().alphas
    assert torch.allclose(fitted.curve[0.0].head(eval_x), zeroshot_logits(task, eval_x), atol=1e-5)
    probe = fit_linear_probe(task)
    assert torch.allclose(fitted.curve[1.0].head(eval_x), probe.head(eval_x), atol=1e-5)
    mid = fitted.curve[0.5].head
    assert torch.allclose(mid.weight, 0.5 * task.logit_scale * task.zeroshot_weights + 0.5 * probe.head.weight)
    assert fitted.val_score == max(m.val_score for m in fitted.curve.values())
    assert fitted.val_score == fitted.curve[fitted.hyperparameters["alpha"]].val_score


# --- full fine-tuning and WiSE-FT (image tower) -------------------------------------------------

def test_full_finetune_trains_a_copy_of_the_tower_from_the_zero_shot_head() -> None:
    task, images, eval_im, eval_y = image_task()
    before = {k: v.clone() for k, v in images.visual.state_dict().items()}
    cfg = FullFinetuneConfig(min_steps=150, lr=3e-2, weight_decay=0.0)
    fitted = fit_full_finetune(task, images, cfg)
    for k, v in images.visual.state_dict().items():  # the pretrained tower is untouched
        assert torch.equal(v, before[k])
    zero_shot = accuracy(zeroshot_logits(task, encode_images(images.visual, eval_im)), eval_y)
    tuned = accuracy(fitted.head(encode_images(fitted.image_tower, eval_im)), eval_y)
    assert tuned > 0.9 > zero_shot + 0.3


def test_wise_ft_image_tower_endpoints() -> None:
    task, images, eval_im, _ = image_task()
    cfg = WiseFtConfig(tower="image", alphas=[0.0, 0.5, 1.0], full=FullFinetuneConfig(min_steps=30, lr=3e-2))
    fitted = fit_wise_ft(task, cfg, images)
    zero = fitted.curve[0.0]
    assert torch.allclose(zero.head(encode_images(zero.image_tower, eval_im)),
                          zeroshot_logits(task, encode_images(images.visual, eval_im)), atol=1e-5)
    full = fit_full_finetune(task, images, cfg.full)  # same seed, same steps: the same fine-tuned model
    one = fitted.curve[1.0]
    for k, v in full.image_tower.state_dict().items():
        assert torch.allclose(one.image_tower.state_dict()[k], v, atol=1e-6)
    assert isinstance(one.head, LinearHead) and torch.allclose(one.head.weight, full.head.weight, atol=1e-6)
