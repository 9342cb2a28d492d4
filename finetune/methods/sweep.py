"""`clipline finetune sweep`: every method x shot count x seed on one dataset.

Features are encoded once (cached); for each (shots, seed) the same k-shot set
is given to every method, so differences between methods are not differences
between draws. Writes sweep.json (every run and a mean/std summary),
sweep.md (the table) and sweep.png (accuracy vs shots, the figure of the
CLIP-Adapter / Tip-Adapter papers).
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.atomic_write import write_json_atomic, write_text_atomic
from data_tools.output_paths import check_output_dir
from finetune.errors import FinetuneError
from finetune.methods.experiment import METHODS, Prepared, evaluate, make_task, timed_fit, zeroshot_report
from finetune.methods.imbalance import ImbalanceConfig
from finetune.methods.run import METRICS, AdaptConfig, prepare_from, report_config
from finetune.methods.shots import Shots, parse_shots

DEFAULT_METHODS = "linear-probe,clip-adapter,tip-adapter,tip-adapter-f,wise-ft"


@dataclass(kw_only=True)
class SweepConfig(AdaptConfig):
    """A sweep over methods, shot counts and seeds."""

    out: str
    """Output directory for sweep.json, sweep.md and sweep.png."""
    methods: str = DEFAULT_METHODS
    """Comma-separated methods: linear-probe, clip-adapter, tip-adapter, tip-adapter-f, wise-ft, full-finetune."""
    shots: str = "1,2,4,8,16"
    """Comma-separated shot counts per class ('all' allowed)."""
    seeds: str = "1,2,3"
    """Comma-separated seeds; each gives a different k-shot draw."""


def run_sweep(options: SweepConfig) -> dict[str, Any]:
    """Run the grid, write sweep.json / sweep.md / sweep.png into options.out, return the JSON."""
    methods = [m.strip() for m in options.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise FinetuneError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    shot_list = parse_shots(options.shots)
    seeds = _parse_seeds(options.seeds)
    check_output_dir(options.out, create=False)  # a file at --out fails before any run
    prep = prepare_from(options)
    runs = run_grid(prep, methods, shot_list, seeds, imbalance=options.imbalance, val_shots=options.val_shots)
    zeroshot = zeroshot_report(prep)
    payload = {
        "checkpoint_id": prep.encoder.checkpoint_id, "config": report_config(options), "classnames": prep.classnames,
        "num_eval": len(prep.eval_y), "zeroshot": {m: zeroshot[m] for m in METRICS},
        "summary": summarise(runs), "runs": runs,
    }
    out = Path(options.out)
    write_json_atomic(out / "sweep.json", payload)
    write_text_atomic(out / "sweep.md", markdown_table(payload))
    plot_accuracy_vs_shots(payload, out / "sweep.png")
    return payload


def run_grid(prep: Prepared, methods: list[str], shot_list: list[Shots], seeds: list[int], *,
             imbalance: ImbalanceConfig | None = None, val_shots: int = 4) -> list[dict[str, Any]]:
    """One row per (shots, seed, method): eval metrics, fit time, chosen hyperparameters."""
    runs = []
    for shots in shot_list:
        for seed in seeds:
            task, split = make_task(prep, shots=shots, seed=seed, imbalance=imbalance, val_shots=val_shots)
            for method in methods:
                fitted, seconds = timed_fit(prep, method, task, split)
                result = evaluate(prep, fitted)
                runs.append({
                    "method": method, "shots": shots, "seed": seed, "fit_seconds": seconds,
                    "val_score": fitted.val_score, "hyperparameters": fitted.hyperparameters,
                    **{m: result[m] for m in METRICS},
                })
                print(f"sweep: {method} {shots}-shot seed {seed}: top1 {result['top1']:.4f} ({seconds:.1f}s)",
                      file=sys.stderr, flush=True)
    return runs


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (sample) std over seeds of each metric, per (method, shots)."""
    groups: dict[tuple[str, Shots], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["method"], run["shots"]), []).append(run)
    rows = []
    for (method, shots), members in groups.items():
        row: dict[str, Any] = {"method": method, "shots": shots, "seeds": len(members)}
        for metric in (*METRICS, "fit_seconds"):
            values = [m[metric] for m in members]
            row[f"{metric}_mean"] = statistics.fmean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def markdown_table(payload: dict[str, Any]) -> str:
    """Top-1 (mean ± std over seeds, in %) per method and shot count, zero-shot as the first row."""
    summary = payload["summary"]
    shots = list(dict.fromkeys(r["shots"] for r in summary))
    methods = list(dict.fromkeys(r["method"] for r in summary))
    cell = {(r["method"], r["shots"]): r for r in summary}
    lines = [
        "| method | " + " | ".join(f"{s}-shot" if s != "all" else "all" for s in shots) + " | fit s (max shots) |",
        "|---|" + "---|" * (len(shots) + 1),
        "| zero-shot | " + " | ".join(f"{100 * payload['zeroshot']['top1']:.1f}" for _ in shots) + " | 0 |",
    ]
    for method in methods:
        values = [cell.get((method, s)) for s in shots]
        text = [f"{100 * v['top1_mean']:.1f} ± {100 * v['top1_std']:.1f}" if v else "" for v in values]
        fit = f"{values[-1]['fit_seconds_mean']:.2f}" if values[-1] else ""
        lines.append(f"| {method} | " + " | ".join(text) + f" | {fit} |")
    caption = f"Top-1 accuracy (%) on {payload['num_eval']} eval images, mean ± std over seeds."
    return caption + "\n\n" + "\n".join(lines) + "\n"


def plot_accuracy_vs_shots(payload: dict[str, Any], path: Path) -> None:
    """Top-1 vs shots per class (log2 axis), one line per method with std error bars, zero-shot dashed."""
    from matplotlib.figure import Figure

    from evaluate.plots import save_png

    summary = payload["summary"]
    numeric = sorted({r["shots"] for r in summary if r["shots"] != "all"})
    all_x = (numeric[-1] * 2) if numeric else 1  # 'all' is drawn one octave right of the largest k
    xpos = lambda s: all_x if s == "all" else s  # noqa: E731
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for method in dict.fromkeys(r["method"] for r in summary):
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: xpos(r["shots"]))
        ax.errorbar([xpos(r["shots"]) for r in rows], [100 * r["top1_mean"] for r in rows],
                    yerr=[100 * r["top1_std"] for r in rows], marker="o", capsize=3, label=method)
    ax.axhline(100 * payload["zeroshot"]["top1"], color="gray", linestyle="--", label="zero-shot")
    ticks = numeric + (["all"] if any(r["shots"] == "all" for r in summary) else [])
    ax.set_xscale("log", base=2)
    ax.set_xticks([xpos(s) for s in ticks], [str(s) for s in ticks])
    ax.set_xlabel("training samples per class")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"few-shot adaptation, {payload['num_eval']} eval images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path, dpi=120)


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise FinetuneError(f"`seeds` must be comma-separated integers, e.g. 1,2,3 (got {text!r})") from err
