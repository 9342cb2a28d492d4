"""The compression table: size, encode speed and quality of fp32, bf16, int8 and pruned towers.

Every variant is measured the same way in one process, back to back: bytes of
its saved state dict, images/s of `encode_image` on the same preprocessed
batch, zero-shot top-1 / macro-F1 and image<->text R@1 on the same eval shards.
Deltas are against fp32. Written to `OUT/compress.json`; the pruned model is
saved as a normal checkpoint under `OUT/pruned/` and the int8 weights under
`OUT/int8/` (load them with `load_int8_encoder`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from data_tools.atomic_write import write_json_atomic
from data_tools.output_paths import check_output_dir
from data_tools.errors import DataError
from data_tools.loader import LoaderConfig, make_loader
from evaluate.retrieval_recall import RetrievalEvaluator
from evaluate.shard_encoding import EncodingConfig
from evaluate.zeroshot import ZeroShotEvaluator
from finetune.compress.variants import (as_encoder, images_per_second, magnitude_prune,
                                        nonzero_parameters, quantize_int8, recover_pruned, serialized_bytes, sparsity,
                                        to_bf16)
from finetune.errors import FinetuneError
from pretrain import checkpoint as checkpoint_io
from pretrain.encoder import Encoder
from pretrain.errors import PretrainError

VARIANTS = ("fp32", "bf16", "int8", "pruned")
INT8_WEIGHTS = "int8/model_int8.pt"
QUALITY_KEYS = ("zeroshot_top1", "zeroshot_macro_f1", "image_to_text_R@1", "text_to_image_R@1")


@dataclass(kw_only=True)
class CompressConfig:
    """Which variants to build and how to measure them."""

    variants: str = ",".join(VARIANTS)
    """Comma-separated: any of fp32, bf16, int8, pruned (fp32 is always measured: it is the reference)."""
    prune_amount: float = 0.5
    """Share of each prunable weight matrix set to zero."""
    recovery_steps: int = 100
    """Steps of the pruned model's recovery fine-tune on --train-data (0: none)."""
    recovery_lr: float = 2e-5
    """Learning rate of the recovery fine-tune."""
    label_field: str | None = None
    """Zero-shot by this .json labels field (e.g. category); default: the shards' classes."""
    templates: str = "auto"
    """Zero-shot prompt templates (see `clipline zeroshot --templates`)."""
    batch_size: int = 64
    """Images per forward pass (speed and evaluation)."""
    speed_images: int = 256
    """Images timed for images/s."""
    max_eval_samples: int | None = None
    """Evaluate on at most this many samples."""
    num_workers: int = 0
    """Loader worker processes."""
    seed: int = 0
    """Seed of the recovery fine-tune's data order."""


def _speed_batch(encoder: Encoder, data: str, count: int) -> torch.Tensor:
    """The first `count` preprocessed eval images, (N, 3, H, W)."""
    images = []
    for batch in make_loader(data, LoaderConfig(batch_size=64, num_workers=0), image_transform=encoder.preprocess):
        images.append(batch["image"])
        if sum(len(b) for b in images) >= count:
            break
    return torch.cat(images)[:count]


def measure(encoder: Encoder, model: torch.nn.Module, float_model: torch.nn.Module, images: torch.Tensor,
            data: str, config: CompressConfig) -> dict[str, Any]:
    """Size, speed and quality of one variant (`float_model`: where its non-zero count comes from)."""
    encoding = EncodingConfig(batch_size=config.batch_size, max_samples=config.max_eval_samples,
                              num_workers=config.num_workers)
    zeroshot = ZeroShotEvaluator(data=data, label_field=config.label_field, templates=config.templates,
                                 encoding=encoding).evaluate(encoder).report
    retrieval = RetrievalEvaluator(data=data, captions="first", encoding=encoding).evaluate(encoder)
    return {
        "size_mb": serialized_bytes(model) / 2**20,
        "nonzero_params": nonzero_parameters(float_model),
        "images_per_s": images_per_second(encoder, images, config.batch_size),
        "zeroshot_top1": zeroshot["top1"],
        "zeroshot_macro_f1": zeroshot["macro_f1"],
        "image_to_text_R@1": retrieval["image_to_text_R@1"],
        "text_to_image_R@1": retrieval["text_to_image_R@1"],
        "n": zeroshot["n"],
    }


def _recovery_batches(encoder: Encoder, train_data: str, config: CompressConfig) -> Callable[[], Iterator[dict]]:
    epoch = iter(range(1_000_000))

    def batches() -> Iterator[dict]:
        loader = LoaderConfig(batch_size=config.batch_size, shuffle=True, seed=config.seed, epoch=next(epoch),
                              caption="random", drop_last=True, num_workers=config.num_workers)
        return iter(make_loader(train_data, loader, image_transform=encoder.preprocess, tokenize=encoder.tokenizer))
    return batches


def _pruned(base: Encoder, train_data: str | None, out: Path, config: CompressConfig,
            log: Callable[[str], None]) -> tuple[torch.nn.Module, dict[str, Any]]:
    student = copy.deepcopy(base.model)
    masks = magnitude_prune(student, config.prune_amount)
    info: dict[str, Any] = {"prune_amount": config.prune_amount, "sparsity": sparsity(student)}
    if config.recovery_steps and train_data:
        started = time.perf_counter()
        losses = recover_pruned(student, base.model, masks, _recovery_batches(base, train_data, config),
                                steps=config.recovery_steps, lr=config.recovery_lr, log=log)
        info |= {"recovery_steps": len(losses), "recovery_seconds": time.perf_counter() - started,
                 "recovery_loss_first_last": [losses[0], losses[-1]], "sparsity_after_recovery": sparsity(student)}
    checkpoint_io.save_checkpoint(out / "pruned", step=config.recovery_steps, state_dict=student.state_dict(),
                                  model_info=base.config)
    return student, info


def compression_table(*, checkpoint: str, data: str, out: str, train_data: str | None = None,
                      config: CompressConfig | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build and measure the variants; write OUT/compress.json; return it."""
    config = config or CompressConfig()
    wanted = {v.strip() for v in config.variants.split(",") if v.strip()}
    unknown = sorted(wanted - set(VARIANTS))
    if unknown:
        raise FinetuneError(f"unknown compression variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    check_output_dir(out, create=False)  # a file at --out fails before the model loads
    try:
        base = Encoder.load(checkpoint)
        images = _speed_batch(base, data, config.speed_images)
    except (PretrainError, DataError) as exc:
        raise FinetuneError(str(exc)) from exc
    out_dir = check_output_dir(out)
    dense = base.model
    rows: dict[str, dict[str, Any]] = {}
    for name in ["fp32", *[v for v in VARIANTS if v in wanted and v != "fp32"]]:
        extra: dict[str, Any] = {}
        if name == "fp32":
            model, float_model = dense, dense
        elif name == "bf16":
            model = float_model = to_bf16(dense)
        elif name == "int8":
            model, float_model = quantize_int8(dense), dense
            (out_dir / INT8_WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), out_dir / INT8_WEIGHTS)
        else:
            model, extra = _pruned(base, train_data, out_dir, config, log)
            float_model = model
        rows[name] = measure(as_encoder(model, base, name), model, float_model, images, data, config) | extra
        log(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[name].items() if isinstance(v, float)))
    for row in rows.values():
        row |= {f"{key}_delta": row[key] - rows["fp32"][key] for key in QUALITY_KEYS}  # absolute points
        row |= {f"{key}_ratio": row[key] / rows["fp32"][key] for key in ("size_mb", "images_per_s")}
    table = {"checkpoint": checkpoint, "checkpoint_id": base.checkpoint_id, "data": data,
             "config": asdict(config), "torch": torch.__version__, "threads": torch.get_num_threads(),
             "variants": rows}
    write_json_atomic(out_dir / "compress.json", table)
    return table


def load_int8_encoder(checkpoint: str, weights: str | Path) -> Encoder:
    """The int8 variant saved by `compression_table` (quantised modules are rebuilt, then filled)."""
    base = Encoder.load(checkpoint)
    model = quantize_int8(base.model)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=False))
    return as_encoder(model, base, "int8")


def markdown_table(table: dict[str, Any]) -> str:
    """The variants as a Markdown table (what the README shows)."""
    lines = ["| variant | size MB | images/s | zero-shot top-1 | macro-F1 | I→T R@1 | T→I R@1 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in table["variants"].items():
        lines.append(f"| {name} | {r['size_mb']:.1f} | {r['images_per_s']:.0f} | {r['zeroshot_top1']:.3f} | "
                     f"{r['zeroshot_macro_f1']:.3f} | {r['image_to_text_R@1']:.3f} | {r['text_to_image_R@1']:.3f} |")
    return "\n".join(lines)
