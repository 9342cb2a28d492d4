"""Linear layers whose bias is added inside the CPU matmul (oneDNN) under bf16 autocast: same values, one pass less.

Under CPU autocast, `F.linear(x, W, b)` runs `addmm`, which first writes the
bias broadcast over the whole (rows, out) output and then accumulates the
matmul onto it: one extra pass over the largest tensor of a block (the MLP's
8,320 x 1,024 hidden layer for clip-tiny-64 at batch 128). oneDNN adds the bias as
part of the matmul instead (`torch.ops.mkldnn._linear_pointwise`, the kernel
torch.compile's CPU backend emits for linear layers). The backward is the
usual one (grad_x = g W, grad_W = g^T x, grad_b = sum g), in bf16 like
autocast's, so values and gradients are those of `F.linear` under autocast
(tested on both towers of clip-tiny-64, forward and backward).

clip-tiny-64 training on the 2-core reference machine: 136.6 -> 152.3 samples/s
(`benchmarks/train_throughput.py` ablation rows). Applied by the trainer on CPU
with bf16 autocast (`bias_fused_linear`) and by `Encoder` to the models it loads;
everywhere else, and without autocast, the layers run `F.linear` unchanged.
`use_plain_linear` turns them back into `nn.Linear` (int8 quantisation needs that type).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.models.attention import ExplicitSelfAttention


class _BiasFusedLinear(torch.autograd.Function):
    """bf16 `x W^T + b` with the bias inside the oneDNN matmul; autocast's bf16 backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)  # (N, in)
        w = weight.to(torch.bfloat16)  # (out, in)
        y = torch.ops.mkldnn._linear_pointwise(x2, w, bias.to(torch.bfloat16), "none", [], "")  # (N, out)
        ctx.save_for_backward(x2, w)
        ctx.input_shape = x.shape
        return y.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        x2, w = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1]).to(torch.bfloat16)  # (N, out)
        grad_x = (g @ w).view(ctx.input_shape) if ctx.needs_input_grad[0] else None
        return grad_x, g.t() @ x2, g.sum(0)  # autograd casts each to its input's dtype


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear`, with the bias fused into the matmul where that is the CPU bf16 autocast path."""
    if (bias is not None and x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.backends.mkldnn.is_available()):
        return _BiasFusedLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class BiasFusedLinear(nn.Linear):
    """`nn.Linear` whose forward is `linear` above (same parameters and state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def use_bias_fused_linear(model: nn.Module) -> int:
    """Switch `model`'s linear layers to `linear` above (same parameters); returns how many.

    Every `nn.Linear` that keeps `nn.Linear.forward` becomes a `BiasFusedLinear`, and explicit self-attention
    computes its input projection with `linear` too.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward]
    attentions = [m for m in model.modules() if isinstance(m, ExplicitSelfAttention)]
    for module in linears:
        module.__class__ = BiasFusedLinear
    for module in attentions:
        module.in_projection = linear
    return len(linears) + len(attentions)


def use_plain_linear(model: nn.Module) -> int:
    """Undo `use_bias_fused_linear` (same parameters); returns how many layers. For tools that match layers by
    their exact type, as torch's dynamic quantisation does (`nn.Linear` only)."""
    fused = [m for m in model.modules() if type(m) is BiasFusedLinear]
    for module in fused:
        module.__class__ = nn.Linear
    for module in model.modules():
        if isinstance(module, ExplicitSelfAttention):
            vars(module).pop("in_projection", None)  # back to the class's F.linear
    return len(fused)
