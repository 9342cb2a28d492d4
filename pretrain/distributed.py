"""Everything distributed, in one place (through accelerate).

The loop sees one `Distributed` object and calls `gather_with_grad`, `is_main`,
`barrier`, `mean`, `gather_objects`; it never branches on world size. One
process is the special case where these are identities. Launch many with
`accelerate launch --multi_gpu --num_processes N -m pretrain ...` or
`torchrun --nproc_per_node N -m pretrain ...` (CPU processes talk over gloo,
GPUs over NCCL; multi-node through the launchers' usual flags). On a machine
without GPUs, accelerate 1.x needs `--multi_gpu` to start N processes: with
`--cpu`, or with neither flag, it starts one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate a tensor from all ranks along dim 0; the gradient flows back to each rank.

    backward: every rank holds a gradient for the whole gathered tensor (its
    loss used all of it); summing them over ranks and keeping this rank's
    slice gives d(sum of rank losses)/d(local tensor). all_reduce is used
    instead of reduce_scatter because gloo (CPU) has no reduce_scatter.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)  # (world * B, ...)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


class Distributed:
    """The process group of a run (a single process when not launched distributed)."""

    def __init__(self, *, cpu: bool | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        if cpu is None:
            cpu = not torch.cuda.is_available()
        # Autocast is ours (precision.py); accelerate only sets up processes and DDP.
        self.accelerator = Accelerator(cpu=cpu, mixed_precision="no",
                                       kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.device = self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move the model to this process's device; wrap it in DDP when there are several."""
        return self.accelerator.prepare_model(model)

    def gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """(B, ...) on each rank -> (world * B, ...) in rank order, differentiable."""
        if self.world_size == 1:
            return tensor
        return _AllGatherWithGrad.apply(tensor)

    def mean(self, value: float) -> float:
        """Average a number over ranks (for logging)."""
        if self.world_size == 1:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item()) / self.world_size

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Mean gradients over ranks for trained parameters outside the DDP-wrapped model
        (e.g. the distillation projection), as DDP does for the model's own."""
        if self.world_size == 1:
            return
        for param in params:
            if param.grad is not None:
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad.div_(self.world_size)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on one (e.g. a stop signal seen by one process)."""
        if self.world_size == 1:
            return bool(flag)
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def gather_objects(self, obj: Any) -> list[Any]:
        """One picklable object per rank, as a list on every rank."""
        if self.world_size == 1:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module, skip: bool) -> Iterator[None]:
        """Accumulate gradients locally (no all-reduce) while `skip` is true."""
        if skip and self.world_size > 1:
            with self.accelerator.no_sync(model):
                yield
        else:
            yield
