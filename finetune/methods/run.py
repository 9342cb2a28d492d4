"""`clipline finetune METHOD`: one method, one shot count, one seed -> adapter + report.json."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal

from data_tools.atomic_write import write_json_atomic
from data_tools.output_paths import check_output_dir
from finetune.methods.adapter_io import save_adapter
from finetune.methods.experiment import METHODS, Prepared, evaluate, make_task, prepare, timed_fit, zeroshot_report
from finetune.methods.imbalance import ImbalanceConfig
from finetune.methods.shots import Shots, parse_shots
from finetune.methods.task import FittedModel
from finetune.train_eval_paths import TrainEvalPathsConfig

METRICS = ("top1", "mean_per_class_recall", "macro_f1")  # the eval figures a curve or a sweep records per fit


@dataclass(kw_only=True)
class AdaptConfig:
    """Where the model and the labelled data come from, and the class-imbalance remedies: what a single run and a
    sweep share."""

    paths: TrainEvalPathsConfig
    """The checkpoint and the train / eval shards (flags without prefix)."""
    label_field: str | None = None
    """Label to classify (e.g. category): that key at the top level of each sample's .json, else under its
    `labels`, else its .cls; default its .cls, else its .json `label`."""
    templates: str = "auto"
    """Zero-shot prompts: imagenet80, imagenet7, generic, emoji, fashion, a file, or auto (from dataset.json source)."""
    feature_cache: str | None = None
    """Feature cache directory (default $CLIPLINE_FEATURE_CACHE or ~/.cache/clipline/features)."""
    val_shots: int = 4
    """Validation samples per class for k-shot runs: min(k, val_shots), drawn apart from the shots."""
    imbalance: ImbalanceConfig = field(default_factory=ImbalanceConfig)
    """Class-imbalance remedies (their flags have no prefix: --class-weight, --balanced-sampling, --focal-gamma)."""


@dataclass(kw_only=True)
class FinetuneConfig(AdaptConfig):
    """One few-shot run."""

    out: str
    """Output directory: adapter (config.json, adapter.safetensors) and report.json."""
    shots: int | Literal["all"] = 16
    """Training samples per class, or 'all'."""
    seed: int = 1
    """Seed of the k-shot draw (and of the method's own randomness)."""


def prepare_from(options: AdaptConfig) -> Prepared:
    """Load the checkpoint's encoder, then features and zero-shot head for the options' data."""
    from pretrain.encoder import Encoder

    paths = options.paths
    return prepare(Encoder.load(paths.checkpoint), train_data=paths.train_data, eval_data=paths.eval_data,
                   label_field=options.label_field, templates=options.templates, feature_cache=options.feature_cache)


def run_finetune(method: str, options: FinetuneConfig, method_config: Any = None) -> dict[str, Any]:
    """Train `method`, evaluate it and zero-shot on eval, save the adapter and report.json in options.out."""
    shots: Shots = parse_shots(str(options.shots))[0]
    check_output_dir(options.out, create=False)  # a file at --out fails before the features are encoded
    prep = prepare_from(options)
    task, split = make_task(prep, shots=shots, seed=options.seed, imbalance=options.imbalance,
                            val_shots=options.val_shots)
    method_config = method_config if method_config is not None else METHODS[method].config_cls()
    print(f"{method}: {len(task.train_y)} training samples, {len(task.val_y)} validation, "
          f"{len(prep.eval_y)} eval, {task.num_classes} classes", file=sys.stderr, flush=True)
    fitted, seconds = timed_fit(prep, method, task, split, method_config)
    report: dict[str, Any] = {
        "method": method, "shots": shots, "seed": options.seed, "checkpoint_id": prep.encoder.checkpoint_id,
        "config": {**report_config(options),
                   "method": asdict(method_config) if is_dataclass(method_config) else method_config},
        "num_train": len(task.train_y), "num_val": len(task.val_y), "classnames": prep.classnames,
        "hyperparameters": fitted.hyperparameters, "val_score": fitted.val_score, "fit_seconds": seconds,
        "zeroshot": zeroshot_report(prep), "result": evaluate(prep, fitted),
    }
    if fitted.curve:
        report["alpha_curve"] = alpha_curve(prep, fitted)
    save_adapter(options.out, method=method, fitted=fitted, checkpoint_id=prep.encoder.checkpoint_id,
                 classnames=prep.classnames,
                 extra={"shots": shots, "seed": options.seed, "label_field": options.label_field})
    write_json_atomic(Path(options.out) / "report.json", report)
    return report


def alpha_curve(prep: Prepared, fitted: FittedModel) -> list[dict[str, float]]:
    """Eval top-1 / mean per-class recall / macro-F1 at every WiSE-FT alpha."""
    rows = []
    for alpha, model in sorted(fitted.curve.items()):
        result = evaluate(prep, model)
        rows.append({"alpha": alpha, **{m: result[m] for m in METRICS}, "val_score": model.val_score})
    return rows


def summary_line(report: dict[str, Any]) -> str:
    r, z = report["result"], report["zeroshot"]
    return (
        f"{report['method']} {report['shots']}-shot seed {report['seed']}: top1 {r['top1']:.4f} "
        f"(zero-shot {z['top1']:.4f}), mean per-class recall {r['mean_per_class_recall']:.4f}, "
        f"macro-F1 {r['macro_f1']:.4f}, fit {report['fit_seconds']:.1f}s"
    )


def report_config(options: AdaptConfig) -> dict[str, Any]:
    """The options as a report records them: paths, data fields and imbalance remedies side by side, as the flags
    read."""
    values = asdict(options)
    paths, imbalance = values.pop("paths"), values.pop("imbalance")
    return {**paths, **values, **imbalance}
