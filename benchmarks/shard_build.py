"""Shard build rate (images/s, 2 workers): ours vs img2dataset on the same local files.

    flock /tmp/clipline-cpu.lock .venv/bin/python benchmarks/shard_build.py [--peer-bin /tmp/i2d-venv/bin/img2dataset]

Figures (one JSON object on stdout):
- emoji: `clipline data build emoji` (3,822 PNGs from the npm cache) vs img2dataset fed
  the same PNGs as a file:// URL list with the same captions;
- fashion-mnist train (60,000): ours from the IDX files; and, like for like, ours
  (`csv:` source) vs img2dataset on the same 60,000 PNGs written to /tmp first (untimed).
Both tools: 64 px, short side resize + centre crop, JPEG, 1000 samples per shard, 2 processes.
img2dataset runs from its own venv (it pins other versions); it is skipped if absent.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from machine import cpu_seconds, machine_info  # benchmarks/machine.py (this script's folder is on sys.path)
from clipline.flags import parse_script_config
from data_tools.build import BuildConfig, build_shards
from data_tools.records import SourceData
from data_tools.sources import SourceConfig, load_source

WORKERS = 2


def rates(samples: int, seconds: float, cpu: float) -> dict:
    """Wall-clock rate, and CPU cost: other jobs share this 2-core machine, so the wall-clock
    rate moves with their load while CPU seconds per image do not; `cpu_bound_images_per_s_2_cores`
    is what a quiet 2-core machine would reach."""
    return {"samples": samples, "seconds": round(seconds, 2), "images_per_s": round(samples / seconds, 1),
            "cpu_s": round(cpu, 2), "cpu_bound_images_per_s_2_cores": round(2 * samples / cpu, 1)}


def time_ours(data: SourceData, out: Path) -> dict:
    cpu_start, start = cpu_seconds(), time.perf_counter()
    info = build_shards(data, BuildConfig(out=out, workers=WORKERS, progress=False, overwrite=True))
    seconds = time.perf_counter() - start
    return rates(info["num_samples"], seconds, cpu_seconds() - cpu_start)


def write_url_list(rows: list[tuple[str, str]], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "caption"])
        writer.writerows(rows)
    return path


def time_img2dataset(peer_bin: Path, url_list: Path, out: Path) -> dict:
    flags = {"--url_list": url_list, "--input_format": "csv", "--url_col": "url", "--caption_col": "caption",
             "--output_format": "webdataset", "--output_folder": out, "--image_size": "64",
             "--resize_mode": "center_crop", "--encode_format": "jpg", "--number_sample_per_shard": "1000",
             "--processes_count": WORKERS, "--thread_count": "8", "--distributor": "multiprocessing",
             "--enable_wandb": "False", "--disallowed_header_directives": "[]"}
    command = [str(peer_bin), *(str(part) for flag_and_value in flags.items() for part in flag_and_value)]
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    cpu_start, start = cpu_seconds(), time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1:]}
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    successes = sum(s["successes"] for s in stats)
    # its own clock: first shard start to last shard end, i.e. without process/import start-up
    busy = max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)
    return rates(successes, seconds, cpu) | {"images_per_s_excluding_startup": round(successes / busy, 1)}


def fashion_pngs(data: SourceData, root: Path) -> list[tuple[str, str]]:
    """Write every Fashion-MNIST image as a PNG (untimed) so both tools read the same files."""
    from PIL import Image

    rows = []
    for record in data.records:
        assert record.pixels is not None
        path = root / f"{record.key}.png"
        Image.frombytes("L", (record.pixels.width, record.pixels.height), record.pixels.data).save(path)
        rows.append((str(path), record.captions[0]))
    return rows


@dataclass(kw_only=True)
class BenchConfig:
    """Shard building speed, ours against img2dataset."""

    peer_bin: Path = Path("/tmp/i2d-venv/bin/img2dataset")
    """img2dataset executable in its own venv (comparison skipped if missing)."""


def main() -> None:
    args = parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/shard_build.py",
                        description=__doc__.splitlines()[0])
    peer = args.peer_bin if args.peer_bin.exists() else None
    figures: dict = {"workers": WORKERS, "image_size": 64, "machine": machine_info(("torch", "webdataset", "pillow")),
               "load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="clipline-bench-") as tmp:
        work = Path(tmp)
        emoji = load_source("emoji", SourceConfig())
        figures["emoji"] = {"ours": time_ours(emoji, work / "emoji_ours")}
        if peer:
            rows = [(f"file://{r.image_path}", r.captions[0]) for r in emoji.records]
            peer_fig = time_img2dataset(peer, write_url_list(rows, work / "emoji.csv"), work / "emoji_peer")
            figures["emoji"]["img2dataset"] = peer_fig
        fashion = load_source("fashion-mnist", SourceConfig(split="train"))
        figures["fashion_mnist_train"] = {"ours_from_idx": time_ours(fashion, work / "fm_ours_idx")}
        (work / "fm_png").mkdir()
        rows = fashion_pngs(fashion, work / "fm_png")
        del fashion
        table = write_url_list(rows, work / "fm_paths.csv")
        csv_source = load_source(f"csv:{table}", SourceConfig(image_column="url"))
        figures["fashion_mnist_train"]["ours_from_png_csv"] = time_ours(csv_source, work / "fm_ours_png")
        if peer:
            urls = write_url_list([(f"file://{p}", c) for p, c in rows], work / "fm_urls.csv")
            figures["fashion_mnist_train"]["img2dataset_from_png"] = time_img2dataset(peer, urls, work / "fm_peer")
            figures["img2dataset_version"] = subprocess.run(
                [str(peer.parent / "python"), "-c", "import importlib.metadata as m; print(m.version('img2dataset'))"],
                capture_output=True, text=True, check=False).stdout.strip()
            for name, ours_key, peer_key in (("emoji", "ours", "img2dataset"),
                                             ("fashion_mnist_train", "ours_from_png_csv", "img2dataset_from_png")):
                ours_fig, peer_fig = figures[name][ours_key], figures[name][peer_key]
                if "images_per_s" in peer_fig:
                    figures[name]["ratio_ours_over_img2dataset_wall"] = round(
                        ours_fig["images_per_s"] / peer_fig["images_per_s"], 2)
                    ours_cost = ours_fig["cpu_s"] / ours_fig["samples"]
                    figures[name]["ratio_ours_over_img2dataset_cpu"] = round(
                        peer_fig["cpu_s"] / peer_fig["samples"] / ours_cost, 2)
        shutil.rmtree(work / "fm_png")
    figures["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
