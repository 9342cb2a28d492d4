"""`clipline finetune METHOD ...` / `python -m finetune METHOD ...`.

METHOD is one of finetune.methods.experiment.METHODS, or `sweep`; a first word
`fusion` is handed to the fusion command. The old spellings `finetune zeroshot`
and `finetune fusion heatmap|compress` (kept for one release, with a notice)
run `clipline zeroshot`, `explain` and `compress`.
Flags come from the config dataclasses (finetune.methods.run,
finetune.methods.sweep) and the method's config dataclass (under --method.*).
"""

from __future__ import annotations

import importlib
import sys

from clipline.commands.errors import fail, reported_errors
from clipline.flags import ConfigParser, config_from_args, parse_config

USAGE = """usage: clipline finetune METHOD --checkpoint RUN --train-data DIR --eval-data DIR --out RUN2 [options]
       clipline finetune sweep --checkpoint RUN --train-data DIR --eval-data DIR --out DIR [--methods ...]
                                [--shots 1,2,4,8,16] [--seeds 1,2,3]

METHOD: {methods}, fusion
`clipline finetune METHOD --help` lists every option."""


# old first words -> the command they are now
RENAMED = {("zeroshot",): "zeroshot", ("fusion", "heatmap"): "explain", ("fusion", "compress"): "compress"}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    for old, new in RENAMED.items():
        if tuple(argv[: len(old)]) == old:
            print(f"note: `clipline finetune {' '.join(old)}` is now `clipline {new}`; the old spelling will be "
                  "removed in the next release", file=sys.stderr)
            importlib.import_module(f"clipline.commands.{new}").main(argv[len(old):])
            return
    if argv[:1] == ["fusion"]:
        from clipline.commands import fusion

        fusion.main(argv[1:])
        return
    from finetune.methods.experiment import METHODS

    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.format(methods=", ".join(METHODS)))
        return
    word, rest = argv[0], argv[1:]
    if word != "sweep" and word not in METHODS:
        fail(f"unknown method {word!r}; choose one of {', '.join([*METHODS, 'sweep', 'fusion'])}")
    with reported_errors(f"finetune {word}"):
        run_sweep(rest) if word == "sweep" else run_method(word, rest)


def run_method(method: str, argv: list[str]) -> None:
    from finetune.methods.experiment import METHODS
    from finetune.methods.run import FinetuneConfig, run_finetune, summary_line

    method_cls = METHODS[method].config_cls
    parser = ConfigParser(f"clipline finetune {method}", FinetuneConfig.__doc__)
    parser.add_config(FinetuneConfig, flat=("paths", "imbalance"))
    parser.add_config(method_cls, prefix="method")
    args = parser.parse(argv)
    config = config_from_args(FinetuneConfig, args)
    report = run_finetune(method, config, config_from_args(method_cls, args, prefix="method"))
    print(summary_line(report))
    print(f"adapter and report.json in {config.out}")


def run_sweep(argv: list[str]) -> None:
    from finetune.methods.sweep import SweepConfig, run_sweep as sweep

    config = parse_config(SweepConfig, argv, prog="clipline finetune sweep", flat=("paths", "imbalance"))
    payload = sweep(config)
    print(f"zero-shot top1 {payload['zeroshot']['top1']:.4f}")
    for row in payload["summary"]:
        print(f"{row['method']:>14} {str(row['shots']):>4}-shot: top1 {row['top1_mean']:.4f} ± {row['top1_std']:.4f}")
    print(f"sweep.json, sweep.md, sweep.png in {config.out}")
