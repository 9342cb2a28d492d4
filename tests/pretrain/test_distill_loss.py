"""distill_loss against a slow element-by-element reference, plus its edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.errors import PretrainError
from pretrain.losses.distill_loss import distill_loss, feature_projection
from tests.pretrain.test_losses import unit


def _reference(x, y, xt, yt, s, st, T, kl_weight, feature_weight, project=lambda v: v):  # noqa: ANN001
    """The module docstring's formulas, one number at a time on the tensors' values as Python lists."""
    px, py = project(x).tolist(), project(y).tolist()
    x, y, xt, yt = x.tolist(), y.tolist(), xt.tolist(), yt.tolist()
    n = len(x)

    def sim(a, b, scale):  # noqa: ANN001
        return [[scale * sum(a[i][k] * b[j][k] for k in range(len(a[i]))) / T for j in range(n)] for i in range(n)]

    def softmax(row):  # noqa: ANN001
        m = max(row)
        e = [math.exp(v - m) for v in row]
        return [v / sum(e) for v in e]

    def kl(p, q):  # noqa: ANN001
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    S, St = sim(x, y, s), sim(xt, yt, st)
    rows = sum(kl(softmax(St[i]), softmax(S[i])) for i in range(n)) / n
    cols = sum(kl(softmax([St[i][j] for i in range(n)]), softmax([S[i][j] for i in range(n)])) for j in range(n)) / n
    l_kl = T * T * 0.5 * (rows + cols)

    def cos(a, b):  # noqa: ANN001
        return sum(u * v for u, v in zip(a, b)) / math.sqrt(sum(u * u for u in a) * sum(v * v for v in b))

    l_feat = 0.5 * (sum(1 - cos(px[i], xt[i]) for i in range(n)) / n + sum(1 - cos(py[i], yt[i]) for i in range(n)) / n)
    return kl_weight * l_kl + feature_weight * l_feat, l_kl, l_feat


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_matches_slow_reference(temperature: float) -> None:
    x, y, xt, yt = unit(6, 8, 1), unit(6, 8, 2), unit(6, 8, 3), unit(6, 8, 4)
    out = distill_loss(x, y, xt, yt, torch.tensor(14.0), torch.tensor(30.0), temperature=temperature,
                       kl_weight=0.7, feature_weight=0.4)
    want, want_kl, want_feat = _reference(x, y, xt, yt, 14.0, 30.0, temperature, 0.7, 0.4)
    assert out["loss"].item() == pytest.approx(want, rel=1e-4)
    assert out["kl"].item() == pytest.approx(want_kl, rel=1e-4)
    assert out["feature"].item() == pytest.approx(want_feat, rel=1e-4)
    assert want_kl > 0.05 and want_feat > 0.1  # the reference case is not degenerate


def test_zero_when_student_is_the_teacher_and_teacher_gets_no_gradient() -> None:
    x, y = unit(5, 8, 1), unit(5, 8, 2)
    xt, yt = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    out = distill_loss(x.clone().requires_grad_(True), y, xt, yt, torch.tensor(20.0), torch.tensor(20.0))
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-6)
    out["loss"].backward()
    assert xt.grad is None and yt.grad is None


def test_different_teacher_size_needs_a_projection() -> None:
    x, y, xt, yt = unit(4, 8, 1), unit(4, 8, 2), unit(4, 16, 3), unit(4, 16, 4)
    with pytest.raises(PretrainError, match="teacher embedding size 16 differs from the student's 8"):
        distill_loss(x, y, xt, yt, torch.tensor(10.0), torch.tensor(10.0))
    # similarities alone work across sizes (both matrices are N x N)
    only_kl = distill_loss(x, y, xt, yt, torch.tensor(10.0), torch.tensor(10.0), feature_weight=0.0)
    assert only_kl["loss"].item() == pytest.approx(only_kl["kl"].item())
    torch.manual_seed(0)
    projection = feature_projection(8, 16)
    assert feature_projection(8, 8) is None
    out = distill_loss(x, y, xt, yt, torch.tensor(10.0), torch.tensor(10.0), projection=projection)
    want, _, _ = _reference(x, y, xt, yt, 10.0, 10.0, 1.0, 1.0, 1.0, project=lambda v: projection(v).detach())
    assert out["loss"].item() == pytest.approx(want, rel=1e-4)
    out["loss"].backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0


def test_two_ranks_average_to_the_global_loss() -> None:
    x, y, xt, yt = unit(8, 6, 5), unit(8, 6, 6), unit(8, 6, 7), unit(8, 6, 8)
    scale, teacher_scale = torch.tensor(12.0), torch.tensor(25.0)
    full = distill_loss(x, y, xt, yt, scale, teacher_scale)["loss"]
    halves = []
    for rank in range(2):
        part = slice(rank * 4, rank * 4 + 4)

        def gather(local: torch.Tensor, rank: int = rank) -> torch.Tensor:
            """all_gather stand-in: this rank's tensor (with its graph) between the other rank's rows."""
            for whole in (x, y, xt, yt):
                if torch.equal(local, whole[rank * 4 : rank * 4 + 4]):
                    return torch.cat([local if r == rank else whole[r * 4 : r * 4 + 4] for r in range(2)])
            raise AssertionError("gathered a tensor that is not one of the inputs")

        halves.append(distill_loss(x[part], y[part], xt[part], yt[part], scale, teacher_scale, gather=gather)["loss"])
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(full.item(), rel=1e-5)
