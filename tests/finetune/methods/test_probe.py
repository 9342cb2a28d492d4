"""Linear probe on synthetic clusters: known answers, a scikit-learn reference, imbalance effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from finetune.methods.imbalance import ImbalanceConfig
from finetune.methods.linear_probe import LinearProbeConfig, fit_linear_probe, fit_logistic_regression
from tests.finetune.fewshot_data import accuracy, cluster_task, mean_per_class_recall, zeroshot_logits


def test_probe_separates_clusters_the_zero_shot_head_gets_wrong() -> None:
    task, eval_x, eval_y = cluster_task(zeroshot="wrong", shots=8)
    assert accuracy(zeroshot_logits(task, eval_x), eval_y) < 0.05
    fitted = fit_linear_probe(task)
    assert accuracy(fitted.head(eval_x).detach(), eval_y) > 0.98
    assert fitted.val_score == 1.0


def test_strong_regularisation_towards_zero_shot_gives_zero_shot_back() -> None:
    task, eval_x, eval_y = cluster_task(zeroshot="random", shots=8)
    fitted = fit_linear_probe(task, LinearProbeConfig(init="zeroshot", l2_grid=[1e4]))
    prior = task.logit_scale * task.zeroshot_weights
    assert (fitted.head.weight - prior).norm() / prior.norm() < 1e-3
    assert torch.equal(fitted.head(eval_x).argmax(1), zeroshot_logits(task, eval_x).argmax(1))


def test_lbfgs_matches_scikit_learn_logistic_regression() -> None:
    task, _, _ = cluster_task(zeroshot="random", shots=30, spread=0.6, num_classes=3, dim=8)
    x, y = task.train_x.double(), task.train_y
    l2 = 0.05
    w, b = fit_logistic_regression(
        x, y, weight=torch.zeros(3, 8, dtype=torch.float64), bias=torch.zeros(3, dtype=torch.float64),
        prior=torch.zeros(3, 8, dtype=torch.float64), l2=l2, max_iter=500,
    )
    # sklearn minimises C * sum_i loss_i + ||W||^2 / 2 (intercept unpenalised); ours is the 1/(l2 N) multiple
    reference = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10000).fit(x.numpy(), y.numpy())
    ours = torch.softmax(x @ w.T + b, dim=1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(x.numpy()), atol=2e-4)


def objective_gradient(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float) -> float:
    """Norm of the gradient of the plain probe objective (init zero) at (w, b)."""
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + 0.5 * l2 * w.pow(2).sum()
    loss.backward()
    return float(torch.cat([w.grad.flatten(), b.grad]).norm())


@pytest.mark.parametrize("carved", [True, False])
def test_refit_on_train_plus_val_only_when_val_was_carved_from_train(carved: bool) -> None:
    task, _, _ = cluster_task(zeroshot="random", shots=6, spread=0.5)
    task.val_from_train = carved
    fitted = fit_linear_probe(task, LinearProbeConfig(init="zero", max_iter=500))
    w, b, l2 = fitted.head.weight.detach(), fitted.head.bias.detach(), fitted.hyperparameters["l2"]
    both_x, both_y = torch.cat([task.train_x, task.val_x]), torch.cat([task.train_y, task.val_y])
    at_both = objective_gradient(w, b, both_x, both_y, l2)
    at_train = objective_gradient(w, b, task.train_x, task.train_y, l2)
    if carved:
        assert at_both < 1e-3 < at_train
    else:
        assert at_train < 1e-3 < at_both


@pytest.mark.parametrize(
    "options",
    [ImbalanceConfig(class_weight=True), ImbalanceConfig(balanced_sampling=True)],
    ids=["class-weight", "balanced-sampling"],
)
def test_imbalance_options_raise_minority_recall(options: ImbalanceConfig) -> None:
    # two overlapping classes, 10:1 in train, balanced at eval: a plain probe leans to the majority
    common = dict(num_classes=2, dim=8, shots=[200, 20], spread=1.0, zeroshot="random", eval_per_class=2000, seed=3)
    plain_task, eval_x, eval_y = cluster_task(**common)
    plain_task.val_x, plain_task.val_y = plain_task.train_x, plain_task.train_y
    cfg = LinearProbeConfig(init="zero", l2_grid=[1e-4])
    plain = fit_linear_probe(plain_task, cfg).head(eval_x).detach()
    fixed_task, _, _ = cluster_task(**common, imbalance=options)
    fixed_task.val_x, fixed_task.val_y = fixed_task.train_x, fixed_task.train_y
    fixed = fit_linear_probe(fixed_task, cfg).head(eval_x).detach()
    minority_recall = lambda logits: (logits.argmax(1)[eval_y == 1] == 1).float().mean().item()  # noqa: E731
    assert minority_recall(fixed) > minority_recall(plain) + 0.15
    assert mean_per_class_recall(fixed, eval_y) > mean_per_class_recall(plain, eval_y) + 0.03


def test_focal_loss_probe_trains() -> None:
    task, eval_x, eval_y = cluster_task(zeroshot="wrong", imbalance=ImbalanceConfig(focal_gamma=2.0))
    assert accuracy(fit_linear_probe(task).head(eval_x).detach(), eval_y) > 0.98
