"""One step's batch run as parts on parallel CPU threads: the same loss and gradients, the cores better used.

On a CPU every op of a step is spread over the intra-op threads; each small op
(layer norms, GELUs, casts, bias sums, attention reshapes) then pays a thread
fork/join and splits tensors too small to share well. Here the batch is cut
into `parts` row ranges instead, and each part's forward and backward run on
their own Python thread with `intra-op threads / parts` threads of their own
(torch releases the GIL inside ops, and a backward called on a thread runs its
CPU work on that thread).

Exact, by GradCache's identity (grad_cache.py): the parts' features are
joined and the loss is taken once over the whole batch, so every pair still
sees every negative; each part then pushes d loss / d its features through its
own graph and autograd adds the parts' parameter gradients (only the order of
additions differs).

clip-tiny-64, batch 128, bf16, 2-core machine: ~930 -> ~820 ms a step (the `batch_split` row of
benchmarks/train_throughput.py: 135.6 -> 154.9 samples/s).

Used on a CPU run in one process with one micro-batch a step, where the
forward draws no random numbers (the threads share torch's generator, so a
dropout mask would depend on thread timing) and has no batch norm (its
statistics are over the whole batch), and not with `deterministic` or
`compile`. Auto only for ViT image towers: the default recipe's ResNet,
split regardless of its batch norm as a speed probe, ran 491 -> 559 ms a step
(its convolutions already use both cores well).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TypeVar

import torch
from open_clip.transformer import PatchDropout, VisionTransformer
from torch import nn
from transformers import PreTrainedModel

from pretrain.config import TrainConfig
from pretrain.distributed import Distributed
from pretrain.errors import PretrainError
from pretrain.grad_cache import Batch, LossFn, as_leaves, surrogate

T = TypeVar("T")
MIN_PART_ROWS = 16  # auto never makes parts smaller than this


class BatchSplit:
    """Runs `forward_backward` with the batch cut into `parts`, one thread each (part 0 on the caller's)."""

    def __init__(self, parts: int, threads_each: int) -> None:
        self.parts, self.threads_each = parts, threads_each
        self._pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="batch-part",
                                        initializer=torch.set_num_threads, initargs=(threads_each,))

    def forward_backward(self, model: nn.Module, micro_batches: Sequence[Batch], *, loss_fn: LossFn,
                         autocast: Callable[[], AbstractContextManager], dist: Distributed) -> torch.Tensor:
        """`grad_cache.forward_backward` for one micro-batch; returns the (detached) loss."""
        (images, texts), = micro_batches
        rows = part_rows(images.shape[0], self.parts)

        def forward(i: int) -> dict[str, torch.Tensor]:
            with autocast():  # autocast state is per thread
                return model(images[rows[i]], texts[rows[i]])

        outs = self._each(forward)
        cached = as_leaves(outs)
        loss = loss_fn(cached)
        loss.backward()
        self._each(lambda i: surrogate(outs[i], cached, rows[i], parts=self.parts).backward())
        return loss.detach()

    def _each(self, work: Callable[[int], T]) -> list[T]:
        """work(i) for every part at once; waits for all of them, then raises the first error."""
        futures = [self._pool.submit(work, i) for i in range(1, self.parts)]
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads_each)
        try:
            first = work(0)
        finally:
            torch.set_num_threads(threads)
            rest = [future.exception() for future in futures]  # waits for every part
        for error in rest:
            if error is not None:
                raise error
        return [first, *(future.result() for future in futures)]


def part_rows(batch: int, parts: int) -> list[slice]:
    """`parts` consecutive row ranges covering `batch` rows, sizes differing by at most one."""
    cuts = [i * batch // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(cuts, cuts[1:])]


def draws_random_numbers(towers: nn.Module) -> bool:
    """Whether the towers' training forward samples anything (dropout, patch dropout, attention dropout).

    A locked HF text tower runs in eval mode (two_tower.py): its dropout layers never sample.
    """
    locked = set(towers.clip.text.transformer.modules()) if getattr(towers, "text_locked", False) else set()
    for module in towers.modules():
        if module in locked:
            continue
        if isinstance(module, nn.modules.dropout._DropoutNd):
            p = module.p
        elif isinstance(module, PatchDropout):
            p = module.prob
        elif isinstance(module, nn.MultiheadAttention):
            p = module.dropout
        elif isinstance(module, PreTrainedModel):  # may pass its attention dropout to SDPA as a number
            p = getattr(module.config, "attention_probs_dropout_prob", 0.0)
        else:
            continue
        if p > 0:
            return True
    return False


def choose_batch_split(config: TrainConfig, towers: nn.Module, *, device: torch.device,
                       processes: int) -> tuple[int, str]:
    """(parts, why) for `config.batch_split` (None = auto). A request > 1 that cannot be honoured raises
    PretrainError."""
    requested, threads = config.batch_split, torch.get_num_threads()
    if requested == 1:
        return 1, "batch_split=1"
    blockers = [why for blocked, why in (
        (device.type != "cpu", "the run is not on a CPU"),
        (processes > 1, "the run has several processes"),
        (config.data.accum_steps > 1, "it needs data.accum_steps=1"),
        (config.deterministic, "deterministic=true fixes the order of gradient additions"),
        (config.compile, "compiled towers are not run from several threads"),
        (draws_random_numbers(towers), "the model samples dropout in its forward"),
        (any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in towers.modules()),
         "batch norm statistics are taken over the whole batch"),
    ) if blocked]
    if requested is None:
        if blockers:
            return 1, blockers[0]
        if threads < 2 or config.data.batch_size < 2 * MIN_PART_ROWS:
            return 1, f"{threads} intra-op thread(s), batch {config.data.batch_size}"
        if not isinstance(getattr(towers.clip, "visual", None), VisionTransformer):
            return 1, "measured faster for ViT image towers only; batch_split=2 asks for it"
        return 2, f"{threads} intra-op threads"
    if blockers:  # requested > 1 here
        raise PretrainError(f"batch_split={requested} cannot be used here: {blockers[0]}; set batch_split=1")
    if requested > config.data.batch_size:
        raise PretrainError(f"batch_split={requested} is more parts than data.batch_size={config.data.batch_size} rows")
    return requested, "requested"


def batch_split_for(config: TrainConfig, towers: nn.Module, *, device: torch.device,
                    processes: int) -> tuple[BatchSplit | None, str]:
    """The trainer's BatchSplit (None: each step's batch runs whole) and how the batch runs, for the log."""
    parts, why = choose_batch_split(config, towers, device=device, processes=processes)
    if parts == 1:
        return None, f"run whole ({why})"
    threads_each = max(1, torch.get_num_threads() // parts)
    return BatchSplit(parts, threads_each), f"run in {parts} parts x {threads_each} thread(s) ({why})"
