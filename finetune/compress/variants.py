"""Smaller towers for CPU inference: bf16 weights, int8 dynamic quantisation, magnitude pruning.

- bf16: every weight cast to bfloat16 (half the bytes); inputs are cast on the way in.
- int8: `torch.ao.quantization.quantize_dynamic`: `nn.Linear` weights int8 per output
  channel, activations quantised per batch at run time; `nn.Embedding` tables int8
  weight-only (the token table is most of a small model's bytes). open_clip's
  attention output projections are `NonDynamicallyQuantizableLinear` (the fused
  attention kernel reads their weights directly), so they and the packed q/k/v
  projection stay float32; the MLPs and a Hugging Face text tower's layers become int8.
- pruned: per weight matrix, the `amount` smallest-magnitude entries of every
  2-D Linear weight and attention in_proj weight are set to zero (exact count),
  then a short recovery fine-tune (contrastive loss + distillation from the dense
  model) runs with the zeros held fixed.

Every variant is wrapped as a `pretrain.Encoder`, so the zero-shot and retrieval
evaluators measure them exactly as they measure any checkpoint.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finetune.errors import FinetuneError
from pretrain import models
from pretrain.encoder import Encoder
from pretrain.losses.clip_loss import clip_loss
from pretrain.losses.distill_loss import distill_loss


class CastTowers(nn.Module):
    """`encode_image` / `encode_text` of a model whose weights are in `dtype`; float32 out.

    The wrapper hides the model's text-tower internals from `Encoder`, which then
    calls these two methods as they are (no padding trimming on a cast model).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = model, dtype
        self.visual = model.visual  # image size / preprocessing config live here

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        features = self.inner.encode_image(images.to(self.dtype)).float()
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: Tensor, normalize: bool = False) -> Tensor:
        features = self.inner.encode_text(text).float()
        return F.normalize(features, dim=-1) if normalize else features


def to_bf16(model: nn.Module) -> nn.Module:
    """A bfloat16 copy of the model (the original is untouched)."""
    return copy.deepcopy(model).to(torch.bfloat16).eval()


def quantize_int8(model: nn.Module) -> nn.Module:
    """An int8 copy for CPU inference: dynamic quantisation of `nn.Linear`, weight-only of `nn.Embedding`."""
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it moves to torchao; its eager API is what runs here without it.
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
        from torch.ao.quantization import (float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig,
                                           quantize_dynamic)

        qconfig = {nn.Linear: per_channel_dynamic_qconfig, nn.Embedding: float_qparams_weight_only_qconfig}
        plain = copy.deepcopy(model).float().eval()
        models.use_plain_linear(plain)  # quantize_dynamic matches the exact type nn.Linear
        quantized = quantize_dynamic(plain, qconfig, dtype=torch.qint8)
    for parent in list(quantized.modules()):
        for name, child in parent.named_children():
            if isinstance(child, DynamicQuantizedLinear):
                # open_clip asks an MLP's c_fc for the tower's compute dtype; this is its hook for int8 layers.
                child.int8_original_dtype = torch.float32
            elif isinstance(child, QuantizedEmbedding):
                setattr(parent, name, ContiguousIndices(child))
    return quantized


class ContiguousIndices(nn.Module):
    """A quantised embedding that accepts sliced (non-contiguous) index tensors, as float ones do."""

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, indices: Tensor) -> Tensor:
        return self.embedding(indices.contiguous())


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """2-D weights of Linear layers and attention in-projections (not embeddings or the patch conv)."""
    found: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, nn.Linear):
            found[prefix + "weight"] = module.weight
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            found[prefix + "in_proj_weight"] = module.in_proj_weight
    return found


@torch.no_grad()
def magnitude_prune(model: nn.Module, amount: float) -> dict[str, Tensor]:
    """Zero exactly round(amount * numel) smallest-|w| entries of each prunable weight, in place.

    Returns the keep-masks {name: bool tensor} (True = kept) for `apply_masks`.
    """
    if not 0.0 <= amount < 1.0:
        raise FinetuneError(f"prune amount must be in [0, 1), got {amount}")
    masks = {}
    for name, weight in prunable_weights(model).items():
        count = round(amount * weight.numel())
        mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
        if count:
            # a stable sort ranks ties by position, so exactly `count` entries go even when values repeat
            order = torch.sort(weight.detach().abs().flatten(), stable=True).indices
            mask[order[:count]] = False
        masks[name] = mask.view_as(weight)
        weight.mul_(masks[name])
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Re-zero pruned entries (after an optimizer step moved them)."""
    weights = prunable_weights(model)
    for name, mask in masks.items():
        weights[name].mul_(mask)


def sparsity(model: nn.Module) -> float:
    """Share of zero entries over all prunable weights."""
    weights = list(prunable_weights(model).values())
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(1, sum(w.numel() for w in weights))


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(state_dict)`: what shipping the weights costs."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def nonzero_parameters(model: nn.Module) -> int:
    """Non-zero entries of the float parameters (count it on the float model an int8 copy came from)."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def as_encoder(model: nn.Module, base: Encoder, name: str) -> Encoder:
    """An Encoder over a compressed model, with the base encoder's preprocessing and tokenizer."""
    dtype = next(model.parameters()).dtype
    towers = CastTowers(model, dtype) if dtype != torch.float32 else model
    return Encoder(model=towers, preprocess=base.preprocess, tokenizer=base.tokenizer, config=base.config,
                   checkpoint_id=f"{base.checkpoint_id}-{name}")


def images_per_second(encoder: Encoder, images: Tensor, batch_size: int = 64, repeats: int = 3) -> float:
    """Best of `repeats` timed passes over `images` (B, 3, H, W), after one warm-up batch."""
    encoder.encode_image(images[:batch_size])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            encoder.encode_image(images[i : i + batch_size])
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def recover_pruned(student: nn.Module, teacher: nn.Module, masks: dict[str, Tensor],
                   batches: Callable[[], Iterator[dict]], *, steps: int = 100, lr: float = 2e-5,
                   log: Callable[[str], None] = print) -> list[float]:
    """Fine-tune `student` in place on image-text batches, pruned entries held at zero; returns losses.

    `steps` AdamW steps at learning rate `lr` (0 skips recovery); the loss is the contrastive
    loss plus distillation from the dense `teacher` (similarity KL + feature cosine).
    """
    teacher.eval()
    student.train()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses: list[float] = []
    stream = batches()
    while len(losses) < steps:
        batch = next(stream, None)
        if batch is None:  # end of the shards: start another pass
            stream = batches()
            continue
        images, text = batch["image"], batch["text"]
        with torch.no_grad():
            t_image = F.normalize(teacher.encode_image(images), dim=-1)
            t_text = F.normalize(teacher.encode_text(text), dim=-1)
        s_image = F.normalize(student.encode_image(images), dim=-1)
        s_text = F.normalize(student.encode_text(text), dim=-1)
        scale = student.logit_scale.exp()
        distill = distill_loss(s_image, s_text, t_image, t_text, scale, teacher.logit_scale.exp())["loss"]
        loss = clip_loss(s_image, s_text, scale) + distill
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        apply_masks(student, masks)
        losses.append(loss.item())
        if len(losses) % 25 == 0 or len(losses) == steps:
            log(f"recovery step {len(losses)}/{steps} loss {sum(losses[-25:]) / len(losses[-25:]):.4f}")
    student.eval()
    return losses
