"""`clipline embed` throughput (samples/s, image + text) vs a plain open_clip loop, same model and batch.

The peer is clip-retrieval's way of embedding shards: a webdataset pipeline
(decode to PIL, the model's preprocess, batch) in a DataLoader, then
encode_image / tokenize + encode_text / normalise per batch and one .npy per
shard. Ours is `embed_shards` (the loader from data_tools, `Encoder`, parts
with metadata and image locations written atomically). Same weights, batch,
one loader worker each, fp32 on CPU; the two run alternately, `--repeats`
times, and the best of each is reported. Prints one JSON object.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clipline.flags import parse_config  # noqa: E402
from data_tools.loader import list_shards  # noqa: E402
from retrieval.embed import EmbedConfig, embed_shards  # noqa: E402
from retrieval.encoder_spec import load_encoder  # noqa: E402


def peer_embed(encoder, shards: list[str], out: Path, batch_size: int, num_workers: int) -> int:
    """clip-retrieval style: webdataset -> preprocess -> batch -> encode both towers -> npy per shard."""
    import webdataset as wds

    model, preprocess, tokenizer = encoder.model, encoder.preprocess, encoder.tokenizer
    count = 0
    for n, shard in enumerate(shards):
        dataset = (wds.WebDataset(shard, shardshuffle=False).decode("pilrgb")
                   .to_tuple("jpg;png;jpeg;webp", "txt").map_tuple(preprocess, lambda t: t).batched(batch_size))
        loader = wds.WebLoader(dataset, batch_size=None, num_workers=num_workers)
        images_out, texts_out = [], []
        for images, texts in loader:
            with torch.no_grad():
                image_features = model.encode_image(images)
                image_features = image_features / image_features.norm(dim=-1, keepdim=True)
                text_features = model.encode_text(tokenizer(list(texts)))
                text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            images_out.append(image_features.numpy())
            texts_out.append(text_features.numpy())
            count += len(images)
        np.save(out / f"img_emb_{n}.npy", np.concatenate(images_out))
        np.save(out / f"text_emb_{n}.npy", np.concatenate(texts_out))
    return count


def ours_embed(encoder, data: str, out: Path, batch_size: int, num_workers: int) -> int:
    info = embed_shards(EmbedConfig(checkpoint="benchmark", data=data, out=str(out), batch_size=batch_size,
                                    num_workers=num_workers), encoder=encoder, log=lambda m: None)
    return int(info["count"])


def timed(run, work: Path) -> tuple[float, int]:
    """(samples/s, samples) of one run into a fresh dir."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    count = run(work)
    return count / (time.perf_counter() - start), count


def compare(model: str, data: str, batch_size: int, num_workers: int, repeats: int, tmp: Path) -> dict:
    encoder = load_encoder(f"open_clip:{model}")
    shards = list_shards(data)
    ours, peer, counts = [], [], set()
    for _ in range(repeats):
        rate, count = timed(lambda w: peer_embed(encoder, shards, w, batch_size, num_workers), tmp / "peer")
        peer.append(rate)
        counts.add(count)
        rate, count = timed(lambda w: ours_embed(encoder, data, w, batch_size, num_workers), tmp / "ours")
        ours.append(rate)
        counts.add(count)
    return {"model": model, "embed_dim": encoder.embed_dim, "samples": sorted(counts),
            "ours_samples_per_s": round(max(ours), 1), "peer_samples_per_s": round(max(peer), 1),
            "speedup": round(max(ours) / max(peer), 2), "ours_runs": [round(r, 1) for r in ours],
            "peer_runs": [round(r, 1) for r in peer]}


@dataclass(kw_only=True)
class BenchConfig:
    """Shard embedding throughput, ours against the peer."""

    data: str = "/tmp/clipdata/emoji-train"
    """Shard dir (emoji corpus)."""
    models: str = "clip-tiny-64,clip-small-64"
    """Comma-separated open_clip model names."""
    batch_size: int = 256
    """Samples per forward pass."""
    num_workers: int = 1
    """Loader worker processes."""
    repeats: int = 2
    """Timed passes per side."""


def main() -> None:
    args = parse_config(BenchConfig, sys.argv[1:], prog="benchmarks/embed_throughput.py",
                        description=__doc__.splitlines()[0])
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        results = [compare(m, args.data, args.batch_size, args.num_workers, args.repeats, Path(tmp))
                   for m in args.models.split(",")]
    print(json.dumps({"benchmark": "embed_throughput", "data": args.data, "batch_size": args.batch_size,
                      "num_workers": args.num_workers, "results": results,
                      "environment": {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                                      "python": platform.python_version(), "cpu": platform.machine()}}))


if __name__ == "__main__":
    main()
