"""`clipline eval retrieval`: image<->text recall@1/5/10 and ranks for a checkpoint.

    clipline eval retrieval --checkpoint RUN --data DIR --out report.json
    clipline eval retrieval --model ViT-B-32 --pretrained epoch_10.pt --data DIR --out report.json
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ArgumentError, ArgumentParser

from data_tools.atomic_write import write_json_atomic
from data_tools.dataclass_flags import add_dataclass_flags, dataclass_from_namespace
from data_tools.errors import DataError
from data_tools.loader import read_dataset_info
from evaluate.errors import EvaluateError
from pretrain.encoder_choice import check_image_size, open_encoder
from pretrain.errors import PretrainError

USER_ERRORS = (EvaluateError, PretrainError, DataError)


@dataclass(kw_only=True)
class RetrievalEvalCommand:
    """Image->text and text->image recall@1/5/10, mean and median rank (exact search)."""

    data: str
    """Shard directory with images and captions."""
    out: str
    """Where to write report.json."""
    checkpoint: str | None = None
    """Run dir (newest checkpoint) or checkpoint dir written by `clipline pretrain`."""
    model: str | None = None
    """open_clip model name, instead of --checkpoint (e.g. ViT-B-32)."""
    pretrained: str | None = None
    """Weights for --model: a file (e.g. open_clip_train's epoch_N.pt); none: random init."""
    captions: Literal["all", "first"] = "all"
    """all: the .txt caption plus the .json 'captions' variants; first: the .txt caption only."""
    batch_size: int = 128
    """Images per forward pass."""
    max_samples: int | None = None
    """Evaluate only the first N samples."""
    num_workers: int | None = None
    """Loader worker processes decoding images; default: chosen for the machine (0 on <= 2 cores, where a
    worker would only take time from the model's threads, else 2)."""
    allow_resize: bool = False
    """Accept shards whose image size differs from the model's (the eval transform rescales them)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Encoder compute: bf16 autocast (about 2.5x faster on CPUs with avx512_bf16), fp32, or auto (bf16 where
    the hardware runs it natively)."""


def run_retrieval_eval(cmd: RetrievalEvalCommand) -> dict[str, Any]:
    """Evaluate and write report.json; returns the report."""
    from evaluate.retrieval_recall import RetrievalEvaluator

    info = read_dataset_info(cmd.data)
    print(f"eval retrieval: loading {cmd.checkpoint or cmd.model}", file=sys.stderr)
    encoder = open_encoder(cmd.checkpoint, cmd.model, cmd.pretrained)
    check_image_size(encoder, info, cmd.data, cmd.allow_resize)
    evaluator = RetrievalEvaluator(
        data=cmd.data, captions=cmd.captions, batch_size=cmd.batch_size, max_samples=cmd.max_samples,
        num_workers=cmd.num_workers, progress=True, precision=cmd.precision,
    )  # fmt: skip
    start = time.perf_counter()
    metrics = evaluator.evaluate(encoder)
    report = {
        "task": "retrieval",
        "checkpoint": cmd.checkpoint,
        "model": cmd.model or encoder.config.get("model_name"),
        "pretrained": cmd.pretrained,
        "checkpoint_id": encoder.checkpoint_id,
        "data": cmd.data,
        "seconds": round(time.perf_counter() - start, 2),
        **metrics,
        "command": {k: v for k, v in asdict(cmd).items() if v is not None},
    }
    write_json_atomic(Path(cmd.out), report)
    print(
        f"eval retrieval: image->text R@1 {report['image_to_text_R@1']:.1%} R@5 {report['image_to_text_R@5']:.1%} "
        f"R@10 {report['image_to_text_R@10']:.1%} | text->image R@1 {report['text_to_image_R@1']:.1%} "
        f"R@5 {report['text_to_image_R@5']:.1%} R@10 {report['text_to_image_R@10']:.1%} "
        f"({report['n']} images, {report['n_texts']} distinct captions)"
    )
    print(f"eval retrieval: wrote {cmd.out}")
    return report


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="clipline eval", description="Evaluation suites.", exit_on_error=False)
    commands = parser.add_subcommands(dest="suite")
    retrieval = ArgumentParser(description=RetrievalEvalCommand.__doc__, exit_on_error=False)
    add_dataclass_flags(retrieval, RetrievalEvalCommand)
    commands.add_subcommand("retrieval", retrieval, help="image<->text recall@k on captioned shards")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        run_retrieval_eval(dataclass_from_namespace(RetrievalEvalCommand, args.retrieval))
    except USER_ERRORS as err:
        _fail(str(err))
    except ArgumentError as err:  # jsonargparse: one line, not a usage dump
        _fail(f"{err} (see `clipline eval retrieval --help`)")


def _fail(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
