"""Everything distributed, in one place (through accelerate).

The loop sees one `Distributed` object and calls `gather_with_grad`, `is_main`,
`barrier`, `mean`, `gather_objects`; it never branches on world size. One
process is the special case where these are identities. Launch many with
`accelerate launch --multi_gpu --num_processes N -m pretrain ...` or
`torchrun --nproc_per_node N -m pretrain ...` (CPU processes talk over gloo,
GPUs over NCCL; multi-node through the launchers' usual flags). On a machine
without GPUs, accelerate 1.x needs `--multi_gpu` to start N processes: with
`--cpu`, or with neither flag, it starts one.

The model is replicated (DDP: a full copy per process, gradients all-reduced)
or sharded (`prepare(model, shard=True)`, FSDP through torch's `fully_shard`:
each process keeps 1/N of the trained weights, their gradients and optimizer
state, gathers a block's weights for its forward and backward, and
reduce-scatters its gradients). accelerate's FSDP plugin is not used: it only
acts on GPUs, and this is the same `fully_shard` it calls, so one code path
runs (and is tested) on CPU/gloo and GPU/NCCL alike. Sharded state is gathered
whole for checkpoints (`full_state`) and split again on resume (`shard_like`),
so a checkpoint does not depend on how it was trained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor


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

    def prepare(self, model: nn.Module, *, shard: bool = False) -> nn.Module:
        """Move the model to this process's device; with several processes, wrap it in DDP or, with
        `shard`, shard it in place (FSDP; see `shard_model`). Build the optimizer afterwards: sharding
        replaces the parameters."""
        if shard and self.world_size > 1:
            return shard_model(model.to(self.device), init_device_mesh(self.device.type, (self.world_size,)))
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
        """Mean gradients over ranks for trained parameters no wrapper averages (the distillation
        projection, `replicated_parameters` of a sharded model), as DDP does for the model's own."""
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
        """Accumulate gradients locally (no all-reduce or reduce-scatter) while `skip` is true."""
        if not skip or self.world_size == 1:
            yield
        elif is_sharded(model):
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        else:
            with self.accelerator.no_sync(model):
                yield

    def clip_grad_norm(self, params: list[nn.Parameter], max_norm: float) -> float:
        """Scale the gradients of `params` so their global L2 norm is at most `max_norm`; returns the norm
        before scaling. Sharded gradients count their whole tensors (one all-reduce for all of them)."""
        grads = [p.grad for p in params if p.grad is not None]
        sharded = [g for g in grads if isinstance(g, DTensor)]
        if not sharded:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        plain = [g for g in grads if not isinstance(g, DTensor)]
        norms = [torch.nn.utils.get_total_norm(sharded).full_tensor()]
        if plain:
            norms.append(torch.nn.utils.get_total_norm(plain))
        total = float(torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms])))
        scale = min(1.0, max_norm / (total + 1e-6))  # clip_grad_norm_'s formula
        for group in (sharded, plain):
            if group and scale < 1.0:
                torch._foreach_mul_(group, scale)
        return total

    def full_state(self, state: Any) -> Any:
        """`state` (a state dict, or nested dicts and lists of them) with each sharded tensor gathered whole
        onto the CPU, on the main process; other processes get None in its place. Every process must call
        it, in the same order. Unsharded tensors are returned as they are."""
        if isinstance(state, DTensor):
            whole = state.full_tensor().cpu()
            return whole if self.is_main else None
        if isinstance(state, dict):
            return {key: self.full_state(value) for key, value in state.items()}
        if isinstance(state, (list, tuple)):
            return type(state)(self.full_state(value) for value in state)
        return state

    @contextlib.contextmanager
    def whole_weights(self, model: nn.Module) -> Iterator[None]:
        """Gather a sharded model's root weights for a while, so its towers can be called outside its own
        forward (evaluation; every process must take part). No-op for an unsharded model."""
        if not is_sharded(model):
            yield
            return
        model.unshard()
        try:
            yield
        finally:
            model.reshard()


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def is_sharded_tensor(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, DTensor)


def shard_model(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """FSDP in place: each transformer block (an entry of an `nn.ModuleList`) is its own unit, gathered
    just for its forward and backward; the rest of the model is the root unit, gathered for the whole step.

    Kept whole on every process, like DDP: frozen parameters (locked towers: no gradient, no optimizer
    state) and scalars (temperature, SigLIP bias), which fully_shard cannot split; the trained ones need
    `average_gradients(replicated_parameters(model))` after backward. The last block of each list stays in
    the root unit: the pooled last block (models/pooled_block.py) reads its weights outside its forward,
    where FSDP would not have gathered them.
    """
    replicated = {p for p in model.parameters() if not p.requires_grad or p.ndim == 0}
    for blocks in [m for m in model.modules() if isinstance(m, nn.ModuleList)][::-1]:  # inner lists first
        for block in list(blocks)[:-1]:
            if any(p.requires_grad for p in block.parameters()):
                fully_shard(block, mesh=mesh, ignored_params=replicated)
    fully_shard(model, mesh=mesh, ignored_params=replicated)
    return model


def replicated_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trained parameters a sharded model keeps whole (their gradients are not reduced by FSDP);
    [] for an unsharded model."""
    if not is_sharded(model):
        return []
    return [p for p in model.parameters() if p.requires_grad and not isinstance(p, DTensor)]


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`value` (whole, the same on every process) split over the processes as the sharded `like` is;
    `value` on `like`'s device where `like` is not sharded."""
    if not isinstance(like, DTensor):
        return value.to(like.device)
    return distribute_tensor(value.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
