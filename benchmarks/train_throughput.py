"""Training throughput: our loop against open_clip's own trainer, back to back in one process.

Same model config, same shards, same batch size, same number of timed steps
after the same warm-up, both with bf16 autocast (open_clip_train at its best
CPU precision, `amp_bf16`, with the webdataset>=0.2.96 fix applied here by
patching, see open_clip issue 935). Maths is exact on both sides: no patch
dropout, no approximations; ours differs only in how the same step is run
(dynamic text padding, text length buckets, the last block computed for the
pooled token only, fused AdamW, explicit-matmul attention instead of the CPU
flash kernel, torch.compile, its loader and its augmentation on whole batches,
the batch run in two parts on parallel threads).

A step is timed from one optimizer step to the next (a global optimizer
step hook, so both trainers are measured the same way, data waits included).
Every run is its own process (settings such as malloc tuning or compiled
code cannot leak from one trainer into the other). The peer runs first and
last, ours second and second to last; the pairs show how much the machine
drifted. The peer gets its best loader setting (of --peer-workers: 0 and 1).
Figures from the median step time are given too: they resist another process
taking a core for a while, which on a shared 2-core machine otherwise
dominates the ratio. Ablations switch our optimisations on one at a time.
MFU = model FLOPs actually executed per step (counted with torch's
FlopCounterMode on a real batch) x steps/s / the bf16 matmul peak measured
here on the same threads. Where torch sees a GPU, both trainers run there, a
step is timed once its kernels have finished, and the peak is the GPU's.
`matmul_bound_*` is the ceiling of our step: its FLOPs at that peak with
nothing else costing time: a speed-up of T over the peer needs an MFU of at
least T / `matmul_bound_speedup`, and one above `matmul_bound_speedup` needs
fewer FLOPs, not a faster loop.

Prints one JSON object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from figures import print_figures, run_fresh_pass  # noqa: E402  (benchmarks/figures.py: this folder is on sys.path)
from machine import machine_info  # noqa: E402  (benchmarks/machine.py)
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

import pretrain.models  # noqa: E402,F401  (registers clip-tiny-64 etc. with open_clip)


class EnoughSteps(Exception):
    """Raised from the step hook to end a trainer once it has been timed."""


class StepClock:
    """Timestamps of every optimizer step taken in this process, by any trainer; leaving the `with` block
    on the clock's own stop (EnoughSteps) is a normal end."""

    def __init__(self, *, stop_after: float = math.inf, stop_after_s: float = math.inf) -> None:
        self.times: list[float] = []
        self.stop_after, self.stop_after_s = stop_after, stop_after_s
        self._handle = None

    def __enter__(self) -> StepClock:
        self._finish = device_finish()  # on a GPU a step ends when its kernels have run, not when queued
        self._start = time.perf_counter()
        self._handle = register_optimizer_step_post_hook(self._hook)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> bool:
        self._handle.remove()
        return exc_type is EnoughSteps

    def _hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._finish()
        self.times.append(time.perf_counter())
        if len(self.times) >= self.stop_after or self.times[-1] - self._start >= self.stop_after_s:
            raise EnoughSteps

    def steps_per_s(self, warmup: int) -> float:
        """Timed steps over their wall time (every cost counted: data waits, epoch restarts)."""
        timed = self.times[warmup:]
        if len(timed) < 2:
            raise RuntimeError(f"only {len(self.times)} steps recorded; need more than warm-up {warmup}")
        return (len(timed) - 1) / (timed[-1] - timed[0])


def patch_open_clip_train_webdataset() -> None:
    """open_clip issue 935: webdataset>=0.2.96 yields an EOF marker dict without 'fname'."""
    import open_clip_train.data as oct_data
    from webdataset.tariterators import tar_file_expander, url_opener

    def tarfile_to_samples_nothrow(src, handler=oct_data.log_and_continue):
        streams = url_opener(src, handler=handler)
        files = tar_file_expander(streams, handler=handler, eof_value=None)
        return oct_data.group_by_keys_nothrow(files, handler=handler)

    oct_data.tarfile_to_samples_nothrow = tarfile_to_samples_nothrow


def shard_pattern(train_data: Path) -> tuple[str, int]:
    """The brace pattern open_clip_train wants, and the sample count from dataset.json."""
    shards = sorted(p.name for p in train_data.glob("*.tar"))
    stems = [s[:-4] for s in shards]
    pattern = str(train_data / f"{{{stems[0]}..{stems[-1]}}}.tar") if len(stems) > 1 else str(train_data / shards[0])
    info = json.loads((train_data / "dataset.json").read_text())
    return pattern, int(info["num_samples"])


def training_device() -> str:
    """Where both trainers run: the GPU when torch sees one (our trainer picks it by itself), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_finish() -> Callable[[], None]:
    """A call that returns once the training device has run the work queued on it (nothing to wait for on CPU)."""
    return torch.cuda.synchronize if training_device() == "cuda" else lambda: None


def peer_argv(*, model: str, train_data: Path, batch_size: int, workers: int, epochs: int, lr: float = 1e-3,
              logs: Path, name: str, extra: list[str] = ()) -> list[str]:
    """open_clip_train's command line; learning rate, warm-up and weight decay as our optimizer's defaults."""
    pattern, num_samples = shard_pattern(train_data)
    flags = {"--model": model, "--train-data": pattern, "--train-num-samples": num_samples,
             "--dataset-type": "webdataset", "--batch-size": batch_size, "--precision": "amp_bf16",
             "--workers": workers, "--epochs": epochs, "--lr": lr, "--warmup": "100", "--wd": "0.2",
             "--device": training_device(), "--logs": logs, "--name": name, "--save-frequency": "0",
             "--report-to": "", "--log-every-n-steps": "100000", "--seed": "0"}
    return [str(part) for flag_and_value in flags.items() for part in flag_and_value] + [*extra]


def run_peer(argv: list[str], clock: StepClock) -> dict[str, Any]:
    """Run open_clip_train.main in this process until `clock` stops it; returns the model it built."""
    import open_clip
    from open_clip_train.main import main as open_clip_train_main

    built: dict[str, Any] = {}
    original = open_clip.create_model_and_transforms

    def keep_model(*args: Any, **kwargs: Any):
        result = original(*args, **kwargs)
        built["model"] = result[0]
        return result

    import open_clip_train.main as oct_main

    oct_main.create_model_and_transforms = keep_model
    root_handlers, root_level = list(logging.root.handlers), logging.root.level
    try:
        with clock, contextlib.redirect_stdout(sys.stderr):
            open_clip_train_main(argv)
    finally:
        oct_main.create_model_and_transforms = original
        logging.root.handlers = root_handlers  # it installs its own handlers and level
        logging.root.setLevel(root_level)
    return built


def bf16_matmul_peak(threads: int) -> dict[str, float]:
    """Best GFLOP/s of large square matmuls in bf16 and fp32, on `threads` threads or on the GPU."""
    torch.set_num_threads(threads)
    device = training_device()
    size = 8192 if device == "cuda" else 2048
    finish = device_finish()  # a GPU product runs after its launch
    figures = {}
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
        best = math.inf
        for _ in range(6):
            finish()
            start = time.perf_counter()
            a @ b
            finish()
            best = min(best, time.perf_counter() - start)
        figures[f"{name}_matmul_gflops"] = 2 * size ** 3 / best / 1e9
    return figures


def flops_per_step(model_name: str, train_data: Path, batch_size: int, ours: bool) -> float:
    """Forward + backward FLOPs of one training step on a real batch (matmuls and attention), as our
    defaults run it (dynamic padding, length buckets, pooled last block) or as the peer does (`ours=False`)."""
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    from data_tools.loader import LoaderConfig, make_loader
    from pretrain.losses import clip_loss
    from pretrain.named_configs import named_config

    cfg = named_config("tiny").model
    towers = pretrain.models.build_model(model_name, dynamic_padding=ours and cfg.dynamic_padding,
                                         pooled_last_block=ours and cfg.pooled_last_block,
                                         text_buckets=cfg.text_buckets if ours else 1)
    pp_cfg = open_clip.transform.PreprocessCfg(**towers.clip.visual.preprocess_cfg)
    loader = make_loader(train_data, LoaderConfig(batch_size=batch_size, num_workers=0, caption="random", shuffle=True),
                         image_transform=open_clip.transform.image_transform_v2(pp_cfg, is_train=False),
                         tokenize=open_clip.get_tokenizer(model_name))
    batch = next(iter(loader))
    with FlopCounterMode(display=False) as counter:
        out = towers(batch["image"], batch["text"])
        clip_loss(out["image_features"], out["text_features"], out["logit_scale"]).backward()
    return float(counter.get_total_flops())


# Our optimisations, switched on one at a time (each run adds one to the one before).
OURS_PLAIN = ["dynamic_padding=false", "fused=false", "attention=fused", "retain_memory=false", "compile=false",
              "pooled_last_block=false", "text_buckets=1", "batch_augment=false",
              "embedding_grad_in_place=false", "bias_fused_linear=false", "batch_split=1"]
ABLATION_STEPS = [
    ("ours_plain", []),
    ("ours_+dynamic_padding", ["dynamic_padding=true"]),
    ("ours_+fused_adamw", ["fused=true"]),
    ("ours_+explicit_attention", ["attention=explicit"]),
    ("ours_+retain_memory", ["retain_memory=true"]),
    ("ours_+loader_in_process", ["workers=null"]),
    ("ours_+pooled_last_block", ["pooled_last_block=true"]),
    ("ours_+text_buckets", ["text_buckets=3"]),
    ("ours_+batch_augment", ["batch_augment=true"]),
    ("ours_+embedding_grad_in_place", ["embedding_grad_in_place=true"]),
    ("ours_+bias_fused_linear", ["bias_fused_linear=true"]),
    ("ours_+batch_split", ["batch_split=2"]),
    ("ours_+compile", ["compile=true", "batch_split=1"]),  # instead of the bias fusion and the split
]


def child_run(spec: dict[str, Any]) -> list[float]:
    """One timed trainer run (in its own process, so no setting leaks into the next run)."""
    patch_open_clip_train_webdataset()
    clock = StepClock(stop_after=spec["steps"])
    data, work = Path(spec["train_data"]), Path(spec["work"])
    if spec["kind"] == "peer":
        run_peer(peer_argv(model=spec["model"], train_data=data, batch_size=spec["batch_size"],
                           workers=spec["workers"], epochs=1000, logs=work, name=spec["tag"]), clock)
    else:
        from pretrain.config import apply_overrides
        from pretrain.named_configs import named_config
        from pretrain.train import train

        workers = "null" if spec["workers"] is None else str(spec["workers"])
        config = apply_overrides(named_config("tiny"), [
            f"train_data={data}", f"model.name={spec['model']}", f"batch_size={spec['batch_size']}",
            f"workers={workers}", f"out={work / spec['tag']}", "steps=100000", "log_every=100000",
            "checkpoint_every=100000", "progress=false", "precision=bf16", *spec["options"]])
        with clock:
            train(config)
    return clock.times


@dataclass(kw_only=True)
class BenchConfig:
    """Our training loop against open_clip_train on the same shards (see the module docstring)."""

    train_data: str
    """Training shard directory."""
    model: str = "clip-tiny-64"
    """Model config trained by both."""
    batch_size: int = 128
    """Pairs per step."""
    peer_workers: list[int] = field(default_factory=lambda: [0, 1])
    """Loader worker settings tried for the peer (its best one counts)."""
    warmup_steps: int = 10
    """Untimed steps first."""
    timed_steps: int = 24
    """Timed steps per run."""
    ablations: bool = True
    """Also switch our optimisations on one at a time."""
    workers: int | None = None
    """Our loader worker processes (None: the trainer's own choice, 0 on a 2-core machine). On a GPU give
    both trainers enough to keep it fed, e.g. --workers 8 --peer-workers [8]."""


def measure(bench: BenchConfig) -> dict[str, Any]:
    """Run the comparison and return the figures (see module docstring)."""
    with tempfile.TemporaryDirectory(prefix="throughput-") as work:  # the runs' outputs and logs
        return _measure_in(bench, Path(work))


def _measure_in(bench: BenchConfig, work: Path) -> dict[str, Any]:
    data = Path(bench.train_data)
    threads = torch.get_num_threads()
    base = {"train_data": str(data), "work": str(work), "model": bench.model, "batch_size": bench.batch_size,
            "steps": bench.warmup_steps + bench.timed_steps + 1}
    rates: dict[str, float] = {}
    median_rates: dict[str, float] = {}

    def run(tag: str, kind: str, workers: int | None, options: list[str] = ()) -> None:
        spec = {**base, "tag": tag, "kind": kind, "workers": workers, "options": list(options)}
        timed = run_fresh_pass(__file__, spec, tag)[bench.warmup_steps:]  # step timestamps after the warm-up
        rates[tag] = (len(timed) - 1) / (timed[-1] - timed[0]) * bench.batch_size
        median_rates[tag] = bench.batch_size / statistics.median(b - a for a, b in zip(timed, timed[1:]))
        print(f"{tag}: {rates[tag]:.1f} samples/s (median step: {median_rates[tag]:.1f})", file=sys.stderr)

    for workers in bench.peer_workers:  # the peer at its best: it gets the faster loader setting
        run(f"open_clip_train_workers{workers}", "peer", workers)
    best_workers = max(bench.peer_workers, key=lambda w: rates[f"open_clip_train_workers{w}"])
    run("ours", "ours", bench.workers)  # our defaults
    options = [*OURS_PLAIN]
    for tag, switch in ABLATION_STEPS if bench.ablations else ():
        options = [*options, *switch]
        run(tag, "ours", best_workers if "workers=null" not in options else None, options)
    if bench.ablations:
        run("ours_fp32", "ours", None, ["precision=fp32"])
    run("ours_again", "ours", bench.workers)
    run("open_clip_train_again", "peer", best_workers)
    peer_runs = [f"open_clip_train_workers{best_workers}", "open_clip_train_again"]
    baseline = statistics.mean(rates[k] for k in peer_runs)
    median_baseline = statistics.mean(median_rates[k] for k in peer_runs)
    ours_rate = statistics.mean(rates[k] for k in ("ours", "ours_again"))
    peak = bf16_matmul_peak(threads)
    flops_ours = flops_per_step(bench.model, data, bench.batch_size, ours=True)
    flops_peer = flops_per_step(bench.model, data, bench.batch_size, ours=False)
    bf16_peak = peak["bf16_matmul_gflops"] * 1e9
    return {
        "samples_per_s": ours_rate, "baseline_samples_per_s": baseline, "speedup": ours_rate / baseline,
        "median_step_speedup": statistics.mean(median_rates[k] for k in ("ours", "ours_again")) / median_baseline,
        "model": bench.model, "batch_size": bench.batch_size, "peer_workers": best_workers,
        "warmup_steps": bench.warmup_steps, "timed_steps": bench.timed_steps, "samples_per_s_by_run": rates,
        "speedup_by_run": {k: v / baseline for k, v in rates.items()},
        "median_step_samples_per_s_by_run": median_rates,
        "flops_per_step": {"ours": flops_ours, "open_clip_train": flops_peer},
        **peak,
        "mfu_ours": flops_ours * ours_rate / bench.batch_size / bf16_peak,
        "mfu_open_clip_train": flops_peer * baseline / bench.batch_size / bf16_peak,
        # the ceiling of this recipe: every FLOP at the measured matmul peak, nothing else costing time
        "matmul_bound_samples_per_s": bf16_peak / flops_ours * bench.batch_size,
        "matmul_bound_speedup": bf16_peak / flops_ours * bench.batch_size / baseline,
        "environment": {**machine_info(threads=threads),
                        "device": torch.cuda.get_device_name() if training_device() == "cuda" else "cpu"},
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        print(json.dumps(child_run(json.loads(sys.argv[2]))))
    else:
        from clipline.flags import parse_script_config

        print_figures(measure(parse_script_config(BenchConfig, sys.argv[1:], prog="benchmarks/train_throughput.py")))
