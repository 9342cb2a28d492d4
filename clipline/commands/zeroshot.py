"""`clipline zeroshot`: zero-shot classification report for a checkpoint or any open_clip model.

    clipline zeroshot --checkpoint RUN --data DIR --out report.json
    clipline zeroshot --model ViT-B-32 --pretrained epoch_10.pt --data DIR --out report.json
    clipline zeroshot --checkpoint RUN --adapter RUN2 --data DIR --out report.json   # a few-shot adapter

Writes report.json (DESIGN.md "Reports") and, next to it, report.html with a
confusion matrix, per-class recall chart and an embedding map.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from clipline.commands.errors import reported_errors
from clipline.commands.model_choice import EVAL_FLAT, EvalRunConfig, normalised, report_provenance
from clipline.flags import config_values, parse_config
from data_tools.atomic_write import write_json_atomic
from data_tools.loader import read_dataset_info
from data_tools.output_paths import check_output_dir, check_output_file
from evaluate.class_names import read_class_file
from finetune.errors import FinetuneError
from pretrain.encoder_choice import check_image_size, open_encoder


@dataclass(kw_only=True)
class ZeroShotConfig:
    """Zero-shot classification of labelled shards with prompt ensembles."""

    run: EvalRunConfig
    """The model, the labelled shards, the report and how images are encoded (flags without prefix)."""
    adapter: str | None = None
    """Adapter directory written by `clipline finetune METHOD --out RUN2`: classify with it instead of the
    prompts alone (its classes; needs the --checkpoint it was trained on)."""
    classes: str | None = None
    """Class names file: one per line, a JSON list, or a JSON object {label name: prompt name}; default: the
    shards' dataset.json."""
    templates: str = "auto"
    """Prompt templates: imagenet80, imagenet7, generic, emoji, fashion, a file, or auto (from dataset.json source)."""
    label_field: str | None = None
    """Classify by this .json field (e.g. category): at the top level, else under `labels`, else .cls."""
    report_dir: str | None = None
    """Directory for report.html and the PNGs (default: next to --out)."""
    format: Literal["clipline", "clip_benchmark"] = "clipline"
    """clipline: report.json + HTML + PNGs; clip_benchmark: only --out, in CLIP_benchmark's JSON layout (dataset,
    model, pretrained, task, metrics acc1 / acc5 / mean_per_class_recall) for results tables kept with it."""
    projection: Literal["pca", "tsne"] = "pca"
    """2-D projection of the embedding map."""


def run_zeroshot(cmd: ZeroShotConfig) -> None:
    """Evaluate and write the report."""
    from evaluate.clip_benchmark_format import dataset_name, zeroshot_classification
    from evaluate.report import write_zeroshot_report
    from evaluate.zeroshot import ZeroShotEvaluator

    run = cmd.run
    check_output_file(run.out, create=False)  # a wrong --out fails before any work, leaving nothing behind
    if cmd.report_dir:
        check_output_dir(cmd.report_dir, create=False)
    choice = normalised(run.encoder)
    if cmd.adapter and (choice.model or not choice.checkpoint):
        raise FinetuneError("--adapter needs the --checkpoint it was trained on (not --model)")
    if cmd.adapter and cmd.classes:
        raise FinetuneError("--classes cannot be combined with --adapter: the adapter's classes are fixed")
    info = read_dataset_info(run.data)
    classnames, prompt_names = read_class_file(cmd.classes) if cmd.classes else (None, None)
    evaluator = ZeroShotEvaluator(
        data=run.data, classnames=classnames, prompt_names=prompt_names, templates=cmd.templates,
        label_field=cmd.label_field, encoding=run.encoding, progress=True,
    )  # fmt: skip
    evaluator.resolve_templates(info)  # a bad --templates fails before the model loads
    print(f"zeroshot: loading {choice.checkpoint or choice.model}", file=sys.stderr)
    encoder = open_encoder(choice.checkpoint, choice.model, choice.pretrained)
    check_image_size(encoder, info, run.data, run.allow_resize)
    if cmd.adapter:
        from finetune.methods.adapter_io import load_adapter

        adapter = load_adapter(cmd.adapter, encoder)  # refuses an adapter of another checkpoint
        label_field = cmd.label_field or adapter.config.get("label_field")  # what it was trained to predict
        evaluator = replace(evaluator, adapter=adapter, label_field=label_field)
    start = time.perf_counter()
    result = evaluator.evaluate(encoder)
    seconds = time.perf_counter() - start
    context = {
        "task": "zeroshot",
        **report_provenance(choice, encoder),
        "data": run.data,
        "label_field": evaluator.label_field,
        "adapter": cmd.adapter,
        "class_source": cmd.classes
        or ("dataset.json" if info.get("classes") or info.get("label_fields") else "labels"),
        "seconds": round(seconds, 2),
        "images_per_s": round((result.report["n"] + result.report["unlabelled_skipped"]) / seconds, 1),
        "command": {k: v for k, v in config_values(cmd, flat=EVAL_FLAT).items() if v is not None},
    }
    report = result.report
    if cmd.format == "clip_benchmark":
        layout = zeroshot_classification(report, dataset=dataset_name(run.data, info), model=context["model"],
                                         pretrained=choice.pretrained or choice.checkpoint)
        print(f"zeroshot: acc1 {report['top1']:.1%}; wrote {write_json_atomic(Path(run.out), layout)} "
              "(CLIP_benchmark layout)")
        return
    written = write_zeroshot_report(
        result, Path(run.out), report_dir=Path(cmd.report_dir) if cmd.report_dir else None,
        context=context, projection=cmd.projection,
    )  # fmt: skip
    if "adapter" in report:
        a = report["adapter"]
        print(f"zeroshot: adapter {a['method']} ({a['shots']}-shot, seed {a['seed']}); the prompts alone: "
              f"top1 {a['prompts_top1']:.1%}")
    print(
        f"zeroshot: top1 {report['top1']:.1%}  top5 {report['top5']:.1%}  mean per-class recall "
        f"{report['mean_per_class_recall']:.1%}  macro F1 {report['macro_f1']:.1%}  "
        f"(n={report['n']}, {report['num_classes']} classes, chance {1 / report['num_classes']:.1%})"
    )
    print(f"zeroshot: wrote {written['json']} and {written['html']}")


def main(argv: list[str] | None = None) -> None:
    with reported_errors("zeroshot"):
        run_zeroshot(parse_config(ZeroShotConfig, argv, flat=EVAL_FLAT, prog="clipline zeroshot"))
