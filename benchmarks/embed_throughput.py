"""`clipline embed` throughput (samples/s, image + text) vs a plain open_clip loop, same model, batch and precision.

    python benchmarks/embed_throughput.py [--data DIR] [--models clip-tiny-64,clip-small-64] [--repeats 3]

The peer is clip-retrieval's way of embedding shards: a webdataset pipeline
(decode to PIL, open_clip's preprocess, batch) in a `WebLoader`, then
`encode_image` / tokenize + `encode_text` / normalise per batch and one .npy
per shard, on the model exactly as `open_clip.create_model_and_transforms`
builds it. Ours is `embed_shards` with the library's defaults (loader workers
chosen for the machine, `--precision auto`), writing parts with metadata and
image locations atomically. Both load the same weights (a random init saved
once per model). The peer computes in bf16 autocast exactly when ours resolves
`auto` to bf16 (fp32 otherwise); it is timed at every worker count in
--peer-workers and its best median is the reference.
Every pass is a fresh process, as each tool runs for a user, so process-wide
settings (our malloc tuning, thread pools) cannot leak from one side into the
other; model loading is not timed. A round times every variant once, the order
reversed every other round. Run the whole script under `taskset` to pin both
sides to the same cores. Cross-check: cosine of each of our vectors to the
peer's vector of the same sample (last round). Prints one JSON object.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from figures import print_figures, run_fresh_pass  # noqa: E402  (benchmarks/figures.py)
from machine import cpu_seconds, machine_info  # noqa: E402  (benchmarks/machine.py: this script's folder is on sys.path)

from clipline.flags import parse_script_config  # noqa: E402
from data_tools.loader import list_shards  # noqa: E402
from data_tools.loader_workers import auto_loader_workers  # noqa: E402
from pretrain.precision import choose_precision  # noqa: E402


@dataclass(kw_only=True)
class BenchConfig:
    """Shard embedding throughput, ours against a plain open_clip loop."""

    data: str = "runs/demo/data/emoji-train-plain"
    """Shard spec (a dir, or a `{a..b}` pattern for a quick run)."""
    models: str = "clip-tiny-64,clip-small-64"
    """Comma-separated open_clip model names (random weights, the same on both sides)."""
    batch_size: int = 256
    """Samples per forward pass, both sides."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Ours: auto, bf16 or fp32; the peer runs bf16 autocast where this resolves to bf16, else fp32."""
    workers: int | None = None
    """Our loader workers (None: the library default for this machine)."""
    peer_workers: tuple[int, ...] = (0, 1)
    """The peer's WebLoader worker counts to try; its best median is the reference."""
    threads: int = 0
    """torch threads in every pass (0: torch's default)."""
    repeats: int = 3
    """Rounds; each round times every variant once."""
    out: str | None = None
    """Also write the JSON here."""


def peer_pass(model_name: str, weights: str, data: str, out: Path, batch_size: int, workers: int,
              precision: str) -> Callable[[], int]:
    """clip-retrieval style: webdataset -> preprocess -> batch -> encode both towers -> npy per shard, in bf16
    autocast if `precision` is bf16. Returns the pass to time (it returns the samples embedded), the model loaded."""
    import open_clip
    import webdataset as wds

    import pretrain.models  # noqa: F401  (registers our model configs with open_clip)

    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    compute = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    shards = list_shards(data)

    def run() -> int:
        count = 0
        for n, shard in enumerate(shards):
            dataset = (wds.WebDataset(shard, shardshuffle=False).decode("pilrgb").to_tuple("jpg;png;jpeg;webp", "txt")
                       .map_tuple(preprocess, lambda t: t).batched(batch_size))
            images_out, texts_out = [], []
            for images, texts in wds.WebLoader(dataset, batch_size=None, num_workers=workers):
                with torch.no_grad(), compute():
                    image_features = model.encode_image(images)  # (B, D)
                    text_features = model.encode_text(tokenizer(list(texts)))  # (B, D)
                images_out.append(torch.nn.functional.normalize(image_features.float(), dim=-1).numpy())
                texts_out.append(torch.nn.functional.normalize(text_features.float(), dim=-1).numpy())
                count += len(images)
            np.save(out / f"img_emb_{n}.npy", np.concatenate(images_out))
            np.save(out / f"text_emb_{n}.npy", np.concatenate(texts_out))
        return count

    return run


def ours_pass(model_name: str, weights: str, data: str, out: Path, batch_size: int, workers: int | None,
              precision: str) -> Callable[[], int]:
    """`embed_shards` as `clipline embed --model NAME --pretrained FILE` runs it; the pass to time, model loaded."""
    from retrieval.embed import EmbedConfig, embed_shards
    from retrieval.encoder_spec import load_encoder

    encoder = load_encoder(f"open_clip:{model_name}:{weights}")
    config = EmbedConfig(checkpoint="benchmark", data=data, out=str(out), batch_size=batch_size, num_workers=workers,
                         precision=precision)
    return lambda: int(embed_shards(config, encoder=encoder, log=lambda m: None)["count"])


def child_pass(spec: dict[str, Any]) -> dict[str, Any]:
    """One timed pass in this (fresh) process: samples per second of wall-clock and of CPU time (this process's
    threads and its loader workers; on a shared machine the CPU figure is the steadier one)."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    out = Path(spec["out"])
    out.mkdir(parents=True)
    make_pass = peer_pass if spec["side"] == "peer" else ours_pass
    run = make_pass(spec["model"], spec["weights"], spec["data"], out, spec["batch_size"], spec["workers"],
                    spec["precision"])
    cpu_start, start = cpu_seconds(), time.perf_counter()
    count = run()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return {"samples_per_s": count / seconds, "samples_per_cpu_s": count / cpu, "samples": count}


def agreement(ours: Path, peer: Path, shards: int) -> dict[str, float]:
    """Min and mean cosine of our vectors to the peer's, sample by sample, per modality."""
    out = {}
    for folder in ("img_emb", "text_emb"):
        a = np.concatenate([np.load(ours / folder / f"part_{i:05d}.npy") for i in range(shards)])  # (N, D)
        b = np.concatenate([np.load(peer / f"{folder}_{i}.npy") for i in range(shards)])  # (N, D)
        cosine = (a.astype(np.float64) * b).sum(axis=1)
        out[f"{folder}_min_cosine"] = round(float(cosine.min()), 6)
        out[f"{folder}_mean_cosine"] = round(float(cosine.mean()), 6)
    return out


def compare(model_name: str, cfg: BenchConfig, precision: str, tmp: Path) -> dict[str, Any]:
    """Every variant of one model, `cfg.repeats` rounds; medians, best peer, ratios, agreement."""
    import open_clip

    import pretrain.models  # noqa: F401  (registers our model configs with open_clip)

    torch.manual_seed(0)
    weights = tmp / f"{model_name}.pt"
    torch.save(open_clip.create_model(model_name).state_dict(), weights)
    base = {"model": model_name, "weights": str(weights), "data": cfg.data, "batch_size": cfg.batch_size,
            "threads": cfg.threads}
    plan = {"ours": {**base, "side": "ours", "workers": cfg.workers, "precision": cfg.precision}}
    plan |= {f"peer_w{w}": {**base, "side": "peer", "workers": w, "precision": precision} for w in cfg.peer_workers}
    rates: dict[str, dict[str, list[float]]] = {"wall": {name: [] for name in plan}, "cpu": {name: [] for name in plan}}
    samples = set()
    for round_index in range(cfg.repeats):
        names = list(plan) if round_index % 2 == 0 else list(reversed(plan))
        for name in names:
            spec = {**plan[name], "out": str(tmp / model_name / f"{name}-{round_index}")}
            result = run_fresh_pass(__file__, spec, spec["side"])
            rates["wall"][name].append(round(result["samples_per_s"], 1))
            rates["cpu"][name].append(round(result["samples_per_cpu_s"], 1))
            samples.add(result["samples"])
    last = cfg.repeats - 1
    out: dict[str, Any] = {"model": model_name, "samples": sorted(samples)}
    for clock, label in (("wall", "samples_per_s"), ("cpu", "samples_per_cpu_s")):
        out[clock] = _ratios(rates[clock], label)
    best_peer = out["wall"]["peer_best"]
    out["agreement_with_peer"] = agreement(tmp / model_name / f"ours-{last}", tmp / model_name / f"{best_peer}-{last}",
                                           len(list_shards(cfg.data)))
    return out


def _ratios(rates: dict[str, list[float]], label: str) -> dict[str, Any]:
    """Every pass, the medians, the best peer variant, and ours over it (of the medians, per round, of the best)."""
    median = {name: statistics.median(values) for name, values in rates.items()}
    best_peer = max((name for name in rates if name != "ours"), key=median.get)
    return {f"passes_{label}": rates, f"median_{label}": {k: round(v, 1) for k, v in median.items()},
            "peer_best": best_peer, "ratio_median": round(median["ours"] / median[best_peer], 3),
            "ratio_per_round": [round(a / b, 3) for a, b in zip(rates["ours"], rates[best_peer])],
            "ratio_best": round(max(rates["ours"]) / max(rates[best_peer]), 3)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "child":
        print(json.dumps(child_pass(json.loads(argv[1]))))
        return
    cfg = parse_script_config(BenchConfig, argv, prog="benchmarks/embed_throughput.py",
                              description=__doc__.splitlines()[0])
    precision, why = choose_precision(cfg.precision, torch.device("cpu"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="embed-throughput-") as tmp:
        results = [compare(m, cfg, precision, Path(tmp)) for m in cfg.models.split(",")]
    result = {
        "benchmark": "embed_throughput", "config": asdict(cfg), "results": results,
        "settings": {
            "ours": {"precision": f"{precision} ({why})" + (" autocast" if precision == "bf16" else ""),
                     "loader_workers": cfg.workers if cfg.workers is not None else
                     f"library default: {auto_loader_workers(None)} (0: decoded and tokenised in a thread ahead "
                     "of the model, across shard boundaries)",
                     "text": "each shard's captions sorted by length, chunks of batch_size cut to their longest",
                     "preprocess": "PIL steps per image, ToTensor + Normalize once per batch "
                                   "(data_tools.batch_normalize, same values)",
                     "attention": "explicit matmuls (pretrain.models.attention) on CPU for short sequences",
                     "linear": "bias added inside the bf16 matmul (pretrain.models.bias_fused_linear, same values)",
                     "last_block": "pooled token only (pretrain.models.pooled_block)",
                     "malloc": "freed memory kept in the process (pretrain.cpu_memory)",
                     "writes": "parts: vectors + parquet metadata with image locations, atomically"},
            "peer": {"precision": "bf16 autocast" if precision == "bf16" else "fp32",
                     "loader_workers_tried": list(cfg.peer_workers),
                     "text": "open_clip tokenizer, full context padding, in batch order",
                     "model": "open_clip.create_model_and_transforms, as built (nn.MultiheadAttention)",
                     "malloc": "glibc default", "writes": "one .npy per shard and modality"},
            "batch_size": cfg.batch_size,
            "process": "one fresh process per timed pass; model loading not timed",
        },
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "machine": machine_info(("torch", "open_clip_torch", "webdataset"), threads=cfg.threads or None),
    }
    print_figures(result, cfg.out)


if __name__ == "__main__":
    main()
