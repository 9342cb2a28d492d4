"""`clipline eval retrieval`: image<->text recall@1/5/10 and ranks for a checkpoint.

    clipline eval retrieval --checkpoint RUN --data DIR --out report.json
    clipline eval retrieval --model ViT-B-32 --pretrained epoch_10.pt --data DIR --out report.json
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clipline.commands.errors import fail, reported_errors
from clipline.commands.model_choice import EVAL_FLAT, EvalRunConfig, normalised, report_provenance
from clipline.flags import config_values, parse_config
from data_tools.atomic_write import write_json_atomic
from data_tools.loader import read_dataset_info
from data_tools.output_paths import check_output_file
from pretrain.encoder_choice import check_image_size, open_encoder


@dataclass(kw_only=True)
class RetrievalEvalConfig:
    """Image->text and text->image recall@1/5/10, mean and median rank (exact search)."""

    run: EvalRunConfig
    """The model, the captioned shards, the report and how images are encoded (flags without prefix)."""
    captions: Literal["all", "first"] = "all"
    """all: the .txt caption plus the .json 'captions' variants; first: the .txt caption only."""
    format: Literal["clipline", "clip_benchmark"] = "clipline"
    """clipline: report.json + HTML + chart; clip_benchmark: only --out, in CLIP_benchmark's JSON layout (metrics
    image_retrieval_recall@k / text_retrieval_recall@k, each caption its own query, as CLIP_benchmark counts)."""


def run_retrieval_eval(cmd: RetrievalEvalConfig) -> None:
    """Evaluate and write report.json."""
    from evaluate.retrieval_recall import RetrievalEvaluator
    from evaluate.clip_benchmark_format import dataset_name, zeroshot_retrieval
    from evaluate.retrieval_report import write_retrieval_report

    run = cmd.run
    check_output_file(run.out, create=False)  # a wrong --out fails before any work
    choice = normalised(run.encoder)
    info = read_dataset_info(run.data)
    print(f"eval retrieval: loading {choice.checkpoint or choice.model}", file=sys.stderr)
    encoder = open_encoder(choice.checkpoint, choice.model, choice.pretrained)
    check_image_size(encoder, info, run.data, run.allow_resize)
    evaluator = RetrievalEvaluator(
        data=run.data, captions=cmd.captions, encoding=run.encoding, progress=True,
        clip_benchmark=cmd.format == "clip_benchmark",
    )  # fmt: skip
    start = time.perf_counter()
    metrics = evaluator.evaluate(encoder)
    report = {
        "task": "retrieval",
        **report_provenance(choice, encoder),
        "data": run.data,
        "seconds": round(time.perf_counter() - start, 2),
        **metrics,
        "command": {k: v for k, v in config_values(cmd, flat=EVAL_FLAT).items() if v is not None},
    }
    if cmd.format == "clip_benchmark":
        layout = zeroshot_retrieval(report, dataset=dataset_name(run.data, info), model=report["model"],
                                    pretrained=choice.pretrained or choice.checkpoint)
        print(f"eval retrieval: wrote {write_json_atomic(Path(run.out), layout)} (CLIP_benchmark layout)")
        return
    written = write_retrieval_report(report, Path(run.out))
    print(
        f"eval retrieval: image->text R@1 {report['image_to_text_R@1']:.1%} R@5 {report['image_to_text_R@5']:.1%} "
        f"R@10 {report['image_to_text_R@10']:.1%} | text->image R@1 {report['text_to_image_R@1']:.1%} "
        f"R@5 {report['text_to_image_R@5']:.1%} R@10 {report['text_to_image_R@10']:.1%} "
        f"({report['n']} images, {report['n_texts']} distinct captions)"
    )
    print(f"eval retrieval: wrote {written['json']} and {written['html']}")


USAGE = """usage: clipline eval retrieval --checkpoint RUN --data DIR --out report.json [options]

  retrieval    image<->text recall@k on captioned shards

`clipline eval retrieval --help` lists every option."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return
    if not argv:
        fail("name an evaluation suite: clipline eval retrieval --checkpoint RUN --data DIR --out report.json")
    if argv[0] != "retrieval":
        fail(f"unknown evaluation suite {argv[0]!r}; choose retrieval (see `clipline eval --help`)")
    with reported_errors("eval retrieval"):
        config = parse_config(RetrievalEvalConfig, argv[1:], prog="clipline eval retrieval", flat=EVAL_FLAT)
        run_retrieval_eval(config)
