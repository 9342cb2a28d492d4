"""Peak resident memory of pretraining: the tiny and small configs at batch 256 (one JSON object).

Each config trains a few steps in its own process (loader in-process, as the
default is on <= 2 cores, so the figure is the whole job) and reports the
peak RSS the run itself records in summary.json (getrusage ru_maxrss).

    .venv/bin/python benchmarks/train_memory.py --train-data runs/demo/data/emoji-train
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from figures import print_figures  # benchmarks/figures.py (this script's folder is on sys.path)
from machine import machine_info  # benchmarks/machine.py

REPO = Path(__file__).resolve().parents[1]


def peak_rss(config: str, train_data: str, batch_size: int, steps: int, extra: list[str], work: Path) -> dict:
    """Train `steps` steps of `config` in a fresh process; its summary.json figures."""
    out = work / f"{config}-{'-'.join(extra) or 'default'}"
    command = [sys.executable, "-m", "pretrain", "--config", config, "--train-data", train_data, "--out", str(out),
               f"batch_size={batch_size}", f"steps={steps}", "time_budget_min=null", "eval_every=0",
               f"checkpoint_every={steps}", "progress=false", *extra]
    subprocess.run(command, check=True, cwd=REPO, capture_output=True, text=True)
    summary = json.loads((out / "summary.json").read_text())
    return {"config": config, "options": extra, "batch_size": batch_size, "steps": steps,
            "peak_rss_mb": round(summary["peak_rss_mb"]), "precision": summary["precision"],
            "seconds": round(summary["seconds"], 1)}


@dataclass(kw_only=True)
class BenchConfig:
    """Peak RSS of tiny, emoji-small and emoji-lit-minilm (and tiny with gradient checkpointing)."""

    train_data: str
    """Training shard directory."""
    batch_size: int = 256
    """Pairs per step."""
    steps: int = 6
    """Steps each run trains."""


def measure(bench: BenchConfig) -> dict:
    """Peak RSS of tiny, emoji-small and emoji-lit-minilm (and tiny with gradient checkpointing)."""
    work = Path(tempfile.mkdtemp(prefix="train-memory-"))
    runs = [peak_rss(config, bench.train_data, bench.batch_size, bench.steps, extra, work) for config, extra in (
        ("tiny", []), ("tiny", ["grad_checkpointing=true"]), ("emoji-small", []), ("emoji-lit-minilm", []))]
    return {"runs": runs, "machine": machine_info()}


if __name__ == "__main__":
    from clipline.flags import parse_script_config

    print_figures(measure(parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/train_memory.py")))
