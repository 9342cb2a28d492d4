"""Zero-shot evaluation: our path vs a plain open_clip loop, for speed and for agreement.

    python benchmarks/eval_speed.py --checkpoint RUN --data DIR [--label-field category]
    python benchmarks/eval_speed.py --model NAME --pretrained FILE --data DIR

Speed: images/s encoded by `clipline zeroshot`'s path (`encode_labelled_images`:
our shard loader + `Encoder.encode_image`, with the library's defaults: loader
workers chosen for the machine, precision fp32 and `auto`) vs the peer's way (a
torch DataLoader over PIL images decoded from the same tars, open_clip's
preprocess, `model.encode_image`), same model and batch size. The peer is timed
at every worker count in --peer-workers, in fp32 and (where `auto` means bf16)
in bf16 autocast; its best median per precision is the reference. The peer's
image bytes are read into memory before its clock starts; ours are read from
the tars inside the timed pass.
Every pass is a fresh process, as each tool runs for a user: process-wide
settings (our malloc tuning, thread pools) cannot leak from one side into the
other. A round runs every variant once, ours and the peer's alternating
(A B A B ...); the JSON has every pass, the medians and the means.
Cross-check: our zero-shot top-1 (fp32 and auto) vs open_clip's
`build_zero_shot_classifier` over the peer's fp32 features, same class names and
templates; also the full `ZeroShotEvaluator.evaluate` time (images, prompts,
report): the images/s `clipline zeroshot` prints.
Prints one JSON object (and writes it to --out if given). Never asserts on time.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import statistics
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import open_clip  # noqa: E402
import torch  # noqa: E402
from figures import print_figures, run_fresh_pass, timed  # noqa: E402  (benchmarks/figures.py)
from machine import machine_info  # noqa: E402  (benchmarks/machine.py: this script's folder is on sys.path)
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from clipline.flags import parse_script_config  # noqa: E402
from data_tools.loader import list_shards, read_dataset_info  # noqa: E402
from data_tools.loader_workers import auto_loader_workers  # noqa: E402
from pretrain.precision import choose_precision  # noqa: E402


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
    ours_extra_workers: tuple[int, ...] = ()
    """Also time our path at these loader worker counts (ours_*_wN); ours_* uses the library default."""
    peer_workers: tuple[int, ...] = (0, 2)
    """Peer DataLoader worker counts to try; its best is the reference."""
    max_samples: int | None = None
    """Use only the first N samples (quick runs); None: all."""
    repeats: int = 2
    """Rounds; each round times every variant once."""
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


def read_peer_samples(cfg: BenchConfig) -> list[tuple[bytes, int]]:
    """Every sample's image bytes and class index, read with plain tarfile (independent of our loader)."""
    info = read_dataset_info(cfg.data)
    classnames = (info.get("label_fields") or {}).get(cfg.label_field) if cfg.label_field else info.get("classes")
    index = {name: i for i, name in enumerate(classnames or [])}
    samples = []
    for shard in list_shards(cfg.data):
        grouped: dict[str, dict[str, bytes]] = {}
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                grouped.setdefault(key, {})[ext] = tar.extractfile(member).read()
        for files in grouped.values():
            image = next(files[e] for e in ("jpg", "jpeg", "png", "webp") if e in files)
            meta = json.loads(files.get("json", b"{}"))
            if cfg.label_field:
                label = index[meta["labels"][cfg.label_field]]
            elif "cls" in files:
                label = int(files["cls"])
            else:
                label = index[meta["label"]]
            samples.append((image, label))
    return samples[: cfg.max_samples]


def peer_model(cfg: BenchConfig) -> tuple[torch.nn.Module, Any, Any]:
    """The plain open_clip model, eval transform and tokenizer, from the same weights as ours."""
    import pretrain.models  # noqa: F401  (registers our model configs with open_clip)
    from pretrain import checkpoint

    if cfg.checkpoint:
        ckpt = checkpoint.resolve_checkpoint(cfg.checkpoint)
        info = checkpoint.read_model_info(ckpt)
        pretrain.models.clip_from_info(info)  # registers a run-time config (e.g. the MiniLM towers)
        name, weights = info["model_name"], str(ckpt / checkpoint.WEIGHTS_FILE)
        context_length = info["tokenizer"]["context_length"]
    else:
        name, weights, context_length = cfg.model, cfg.pretrained, None
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights)
    tokenizer = open_clip.get_tokenizer(name, **({"context_length": context_length} if context_length else {}))
    return model.eval(), preprocess, tokenizer


def peer_encode(model: torch.nn.Module, loader: DataLoader, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain loop: batches from the DataLoader through `model.encode_image` (bf16 autocast if asked)."""
    features, labels = [], []
    compute = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), compute:
        for images, label in loader:
            features.append(model.encode_image(images, normalize=True).float())
            labels.append(label)
    return torch.cat(features), torch.cat(labels)


def child_pass(cfg: BenchConfig, spec: dict[str, Any]) -> dict[str, Any]:
    """One timed pass over the data in this (fresh) process; see `main` for the spec."""
    if spec["side"] == "peer":
        model, preprocess, _ = peer_model(cfg)
        loader = DataLoader(PeerImages(read_peer_samples(cfg), preprocess), batch_size=cfg.batch_size,
                            num_workers=spec["workers"])  # fmt: skip
        (features, labels), seconds = timed(peer_encode, model, loader, spec["precision"] == "bf16")
        if spec.get("save"):
            torch.save({"features": features, "labels": labels}, spec["save"])
        return {"images_per_s": len(labels) / seconds, "n": len(labels)}
    from evaluate.shard_encoding import EncodingConfig
    from evaluate.zeroshot import ZeroShotEvaluator, encode_labelled_images
    from pretrain.encoder_choice import open_encoder

    encoder = open_encoder(cfg.checkpoint, cfg.model, cfg.pretrained)
    # the evaluate pass has no "workers": the library's default, as `clipline zeroshot` runs it
    encoding = EncodingConfig(batch_size=cfg.batch_size, max_samples=cfg.max_samples, num_workers=spec.get("workers"),
                              precision=spec["precision"])
    if spec["side"] == "ours":
        encoded, seconds = timed(encode_labelled_images, encoder, cfg.data, encoding, label_field=cfg.label_field)
        return {"images_per_s": len(encoded.keys) / seconds, "n": len(encoded.keys)}
    evaluator = ZeroShotEvaluator(data=cfg.data, templates=cfg.templates, label_field=cfg.label_field,
                                  encoding=encoding)
    result, seconds = timed(evaluator.evaluate, encoder)
    torch.save(result.classifier.weights, spec["save"])
    keys = ("precision", "loader_workers", "top1", "n", "classes", "templates")
    return {**{k: result.report[k] for k in keys}, "templates_all": result.classifier.templates,
            "evaluate_images_per_s": round(result.report["n"] / seconds, 1)}  # fmt: skip


def run_child(cfg: BenchConfig, spec: dict[str, Any]) -> dict[str, Any]:
    return run_fresh_pass(__file__, {"cfg": asdict(cfg), "spec": spec}, str(spec))


def variants(cfg: BenchConfig) -> dict[str, dict[str, Any]]:
    """name -> child spec, ours and the peer's alternating within each precision."""
    auto = choose_precision("auto", torch.device("cpu"))[0]
    out: dict[str, dict[str, Any]] = {}
    for ours_precision, peer_precision in [("fp32", "fp32")] + ([("auto", "bf16")] if auto == "bf16" else []):
        ours = {f"ours_{ours_precision}": {"side": "ours", "precision": ours_precision, "workers": None}}
        ours.update({f"ours_{ours_precision}_w{w}": {"side": "ours", "precision": ours_precision, "workers": w}
                     for w in cfg.ours_extra_workers})  # fmt: skip
        peer = {f"peer_{peer_precision}_w{w}": {"side": "peer", "precision": peer_precision, "workers": w}
                for w in cfg.peer_workers}  # fmt: skip
        for pair in itertools.zip_longest(ours.items(), peer.items()):
            out.update(item for item in pair if item is not None)
    return out


def summarise(rates: dict[str, list[float]]) -> dict[str, Any]:
    """Medians and means; the peer's best worker count per precision; our ratios over it."""
    median = {name: statistics.median(values) for name, values in rates.items()}
    mean = {name: statistics.fmean(values) for name, values in rates.items()}
    out: dict[str, Any] = {"passes_images_per_s": rates,
                           "median_images_per_s": {k: round(v, 1) for k, v in median.items()},
                           "mean_images_per_s": {k: round(v, 1) for k, v in mean.items()}}  # fmt: skip
    for precision in ("fp32", "bf16"):
        peers = {name: value for name, value in median.items() if name.startswith(f"peer_{precision}_")}
        if peers:
            out[f"peer_best_{precision}"] = max(peers, key=peers.get)
    ratios = {"ours_fp32_over_peer_fp32": ("ours_fp32", out["peer_best_fp32"])}
    if "peer_best_bf16" in out:
        ratios["ours_auto_over_peer_fp32"] = ("ours_auto", out["peer_best_fp32"])  # each side's default
        ratios["ours_auto_over_peer_bf16"] = ("ours_auto", out["peer_best_bf16"])  # same precision both sides
    for label, (ours, peer) in ratios.items():
        out[f"ratio_{label}_median"] = round(median[ours] / median[peer], 3)
        out[f"ratio_{label}_mean"] = round(mean[ours] / mean[peer], 3)
        out[f"ratio_{label}_per_round"] = [round(a / b, 3) for a, b in zip(rates[ours], rates[peer])]
    return out


def cross_check(cfg: BenchConfig, work: Path, peer_features: Path) -> dict[str, Any]:
    """Our top-1 (fp32 and auto) vs open_clip's own zero-shot classifier over the peer's fp32 features."""
    model, _, tokenizer = peer_model(cfg)
    saved = torch.load(peer_features)
    features, labels = saved["features"], saved["labels"]
    out: dict[str, Any] = {"reference_n": len(labels)}
    for precision in ("fp32", "auto"):
        ours = run_child(cfg, {"side": "evaluate", "precision": precision, "save": str(work / f"w_{precision}.pt")})
        templates = [t.replace("{c}", "{}") for t in ours["templates_all"]]
        weights = open_clip.build_zero_shot_classifier(model, tokenizer, ours["classes"], templates)  # (D, C)
        reference_top1 = float(((features @ weights).argmax(dim=1) == labels).double().mean())
        our_weights = torch.load(work / f"w_{precision}.pt")  # (C, D)
        out[precision] = {"precision": ours["precision"], "loader_workers": ours["loader_workers"],
                          "ours_top1": ours["top1"], "reference_top1": reference_top1,
                          "difference_points": round(100 * abs(ours["top1"] - reference_top1), 4), "n": ours["n"],
                          "max_abs_weight_difference": float((our_weights - weights.T).abs().max()),
                          "evaluate_images_per_s": ours["evaluate_images_per_s"]}
    return out | {"num_classes": len(ours["classes"]), "templates": ours["templates"]}


def measure(cfg: BenchConfig) -> dict[str, Any]:
    plan = variants(cfg)
    rates: dict[str, list[float]] = {name: [] for name in plan}
    with tempfile.TemporaryDirectory(prefix="eval-speed-") as tmp:
        work = Path(tmp)
        reference = work / "peer_fp32.pt"
        for round_index in range(cfg.repeats):
            for name, spec in plan.items():
                last_reference = round_index == cfg.repeats - 1 and name == f"peer_fp32_w{cfg.peer_workers[0]}"
                result = run_child(cfg, {**spec, "save": str(reference) if last_reference else None})
                rates[name].append(round(result["images_per_s"], 1))
        checked = cross_check(cfg, work, reference)
    return {"speed": summarise(rates), "cross_check": checked, "n_images": result["n"]}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "child":
        job = json.loads(argv[1])
        print(json.dumps(child_pass(BenchConfig(**job["cfg"]), job["spec"])))
        return
    cfg = parse_script_config(BenchConfig, argv, prog="eval_speed")
    if cfg.checkpoint:  # every pass uses the same weights even if the run writes a newer checkpoint meanwhile
        from pretrain.checkpoint import resolve_checkpoint

        cfg = replace(cfg, checkpoint=str(resolve_checkpoint(cfg.checkpoint)))
    measured = measure(cfg)
    result = {
        "benchmark": "eval_speed", "config": asdict(cfg), "n_images": measured["n_images"],
        "settings": {
            "ours": {"loader_workers": auto_loader_workers(None), "extra_loader_workers": list(cfg.ours_extra_workers),
                     "precision": ["fp32", "auto = " + choose_precision("auto", torch.device("cpu"))[0]],
                     "attention": "explicit matmuls (pretrain.models.attention) on CPU for short sequences",
                     "malloc": "freed memory kept in the process (pretrain.cpu_memory)"},
            "peer": {"loader_workers_tried": list(cfg.peer_workers), "precision": ["fp32", "bf16 autocast"],
                     "attention": "torch nn.MultiheadAttention (fused inference fast path)", "malloc": "glibc default"},
            "batch_size": cfg.batch_size, "torch_threads": torch.get_num_threads(),
            "process": "one fresh process per timed pass; model load and peer tar reading not timed",
        },  # fmt: skip
        "speed": measured["speed"], "cross_check": measured["cross_check"], "machine": machine_info(),
    }
    print_figures(result, cfg.out)


if __name__ == "__main__":
    main()
