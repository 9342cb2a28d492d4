"""Zero-shot evaluation: our path vs a plain open_clip loop, for speed and for agreement.

    python benchmarks/eval_speed.py --checkpoint RUN --data DIR [--label-field category]
    python benchmarks/eval_speed.py --model NAME --pretrained FILE --data DIR

Speed: images/s encoded by `clipline zeroshot`'s path (our shard loader +
`Encoder.encode_image`, in fp32 and in its default `auto` precision, i.e. bf16
autocast on CPUs with native bf16) vs the peer's way (a torch DataLoader over PIL images
decoded from the same tars, open_clip's preprocess, `model.encode_image`), same
model, batch size and worker count, run alternately in one process.
Cross-check: our zero-shot top-1 (fp32 and auto) vs open_clip's
`build_zero_shot_classifier` over the peer's fp32 features, same class names and templates.
Prints one JSON object (and writes it to --out if given). Never asserts on time.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from jsonargparse import ArgumentParser
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from data_tools.dataclass_flags import add_dataclass_flags, dataclass_from_namespace
from data_tools.loader import list_shards, read_dataset_info
from finetune.zeroshot import ZeroShotEvaluator, encode_labelled_images
from pretrain import checkpoint
from pretrain.encoder import Encoder
from pretrain.precision import choose_precision


@dataclass(kw_only=True)
class BenchConfig:
    """Zero-shot evaluation speed and agreement vs plain open_clip."""

    data: str
    """Labelled shard directory."""
    checkpoint: str | None = None
    """clipline run or checkpoint dir."""
    model: str | None = None
    """open_clip model name (instead of --checkpoint)."""
    pretrained: str | None = None
    """Weights file for --model (e.g. open_clip_train's epoch_N.pt)."""
    label_field: str | None = None
    """Classify by this .json labels field."""
    templates: str = "auto"
    """Template set or file, as for `clipline zeroshot`."""
    batch_size: int = 128
    """Images per forward pass, both sides."""
    num_workers: int = 2
    """Loader workers, both sides."""
    repeats: int = 3
    """Timed passes per side (alternating); the median is reported."""
    out: str | None = None
    """Also write the JSON here."""


class PeerImages(Dataset):
    """The peer's dataset: (image bytes, label) in memory, decoded to PIL and preprocessed per item."""

    def __init__(self, samples: list[tuple[bytes, int]], preprocess: Any) -> None:
        self.samples, self.preprocess = samples, preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        data, label = self.samples[i]
        return self.preprocess(Image.open(io.BytesIO(data)).convert("RGB")), label


def read_peer_samples(data: str, label_field: str | None, classnames: list[str]) -> list[tuple[bytes, int]]:
    """Every sample's image bytes and class index, read with plain tarfile (independent of our loader)."""
    index = {name: i for i, name in enumerate(classnames)}
    samples = []
    for shard in list_shards(data):
        grouped: dict[str, dict[str, bytes]] = {}
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                grouped.setdefault(key, {})[ext] = tar.extractfile(member).read()
        for files in grouped.values():
            image = next(files[e] for e in ("jpg", "jpeg", "png", "webp") if e in files)
            meta = json.loads(files.get("json", b"{}"))
            if label_field:
                label = index[meta["labels"][label_field]]
            elif "cls" in files:
                label = int(files["cls"])
            else:
                label = index[meta["label"]]
            samples.append((image, label))
    return samples


def peer_encode(model: torch.nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = [], []
    with torch.no_grad():
        for images, label in loader:
            features.append(model.encode_image(images, normalize=True))
            labels.append(label)
    return torch.cat(features), torch.cat(labels)


def load_models(cfg: BenchConfig) -> tuple[Encoder, torch.nn.Module, Any, Any, str]:
    """Our Encoder and the plain open_clip model, transform and tokenizer with the same weights."""
    if cfg.checkpoint:
        encoder = Encoder.load(cfg.checkpoint)  # also registers the model config with open_clip
        name = encoder.config["model_name"]
        weights = str(checkpoint.resolve_checkpoint(cfg.checkpoint) / checkpoint.WEIGHTS_FILE)
    else:
        encoder = Encoder.from_open_clip(cfg.model, pretrained=cfg.pretrained)
        name, weights = cfg.model, cfg.pretrained
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights)
    tokenizer = open_clip.get_tokenizer(name, context_length=encoder.config["tokenizer"]["context_length"])
    return encoder, model.eval(), preprocess, tokenizer, name


def time_passes(cfg: BenchConfig, encoder: Encoder, model: torch.nn.Module, peer_loader: DataLoader) -> dict[str, Any]:
    """Images/s of our path in fp32 and in `auto` precision, and of the peer loop, alternating."""
    rates: dict[str, list[float]] = {"ours_fp32": [], "ours_auto": [], "peer": []}
    n = len(peer_loader.dataset)

    def ours(precision: str, max_samples: int | None = None) -> int:
        encoded = encode_labelled_images(encoder, cfg.data, label_field=cfg.label_field, batch_size=cfg.batch_size,
                                         num_workers=cfg.num_workers, max_samples=max_samples, precision=precision)
        return len(encoded.keys)

    ours("fp32", cfg.batch_size), ours("auto", cfg.batch_size)  # warm-up
    peer_encode(model, DataLoader(peer_loader.dataset, batch_size=cfg.batch_size))  # warm-up
    for _ in range(cfg.repeats):
        for side in rates:
            start = time.perf_counter()
            count = peer_encode(model, peer_loader)[0].shape[0] if side == "peer" else ours(side.split("_")[1])
            rates[side].append(count / (time.perf_counter() - start))
    medians = {side: statistics.median(values) for side, values in rates.items()}
    return {
        **{f"{side}_images_per_s": [round(v, 1) for v in values] for side, values in rates.items()},
        **{f"{side}_median_images_per_s": round(value, 1) for side, value in medians.items()},
        "auto_precision": choose_precision("auto", encoder.device)[0],
        "speed_ratio_ours_fp32_over_peer": round(medians["ours_fp32"] / medians["peer"], 3),
        "speed_ratio_ours_auto_over_peer": round(medians["ours_auto"] / medians["peer"], 3),
        "n": n,
    }


def cross_check(cfg: BenchConfig, encoder: Encoder, model: torch.nn.Module, tokenizer: Any,
                peer_loader: DataLoader) -> dict[str, Any]:  # fmt: skip
    """Our top-1 (fp32 and auto precision) vs open_clip's own zero-shot classifier over the peer's features."""
    features, labels = peer_encode(model, peer_loader)
    out: dict[str, Any] = {"reference_n": len(labels)}
    for precision in ("fp32", "auto"):
        evaluator = ZeroShotEvaluator(data=cfg.data, templates=cfg.templates, label_field=cfg.label_field,
                                      batch_size=cfg.batch_size, num_workers=cfg.num_workers, precision=precision)
        result = evaluator.evaluate(encoder)
        templates = [t.replace("{c}", "{}") for t in result.classifier.templates]
        weights = open_clip.build_zero_shot_classifier(model, tokenizer, result.report["classes"], templates)  # (D, C)
        reference_top1 = float(((features @ weights).argmax(dim=1) == labels).double().mean())
        out[precision] = {
            "precision": result.report["precision"],
            "ours_top1": result.report["top1"],
            "reference_top1": reference_top1,
            "difference_points": round(100 * abs(result.report["top1"] - reference_top1), 4),
            "n": result.report["n"],
            "max_abs_weight_difference": float((result.classifier.weights - weights.T).abs().max()),
        }
    out["num_classes"] = len(result.report["classes"])
    out["templates"] = result.report["templates"]
    return out


def environment() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    first = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in cpuinfo[:40])}
    return {
        "python": platform.python_version(), "torch": torch.__version__, "open_clip": open_clip.__version__,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "cpu_model": first.get("model name"), "cpu_flags": first.get("flags"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="eval_speed", description=BenchConfig.__doc__)
    add_dataclass_flags(parser, BenchConfig)
    cfg = dataclass_from_namespace(BenchConfig, parser.parse_args(sys.argv[1:] if argv is None else argv))
    encoder, model, preprocess, tokenizer, name = load_models(cfg)
    info = read_dataset_info(cfg.data)
    classnames = (info.get("label_fields") or {}).get(cfg.label_field) if cfg.label_field else info.get("classes")
    samples = read_peer_samples(cfg.data, cfg.label_field, classnames or [])
    peer_loader = DataLoader(PeerImages(samples, preprocess), batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    result = {
        "benchmark": "eval_speed",
        "config": asdict(cfg),
        "model": name,
        "image_size": encoder.image_size,
        "n_images": len(samples),
        "speed": time_passes(cfg, encoder, model, peer_loader),
        "cross_check": cross_check(cfg, encoder, model, tokenizer, peer_loader),
        "environment": environment(),
    }
    text = json.dumps(result, indent=2)
    if cfg.out:
        Path(cfg.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
