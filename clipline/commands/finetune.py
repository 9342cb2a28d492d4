"""`clipline finetune METHOD ...` / `python -m finetune METHOD ...`.

METHOD is one of finetune.methods.experiment.METHODS, or `sweep`; a first word
`fusion` is handed to the fusion command, and `zeroshot` (the old spelling of
`clipline zeroshot`, kept for one release with a notice) to the zeroshot one.
Flags come from the config dataclasses (finetune.methods.run,
finetune.methods.sweep) and the method's config dataclass (under --method.*).
"""

from __future__ import annotations

import sys

from clipline.commands.errors import fail, reported_errors
from clipline.flags import ConfigParser, config_from_args

USAGE = """usage: clipline finetune METHOD --checkpoint RUN --train-data DIR --eval-data DIR --out RUN2 [options]
       clipline finetune sweep --checkpoint RUN --train-data DIR --eval-data DIR --out DIR [--methods ...]
                                [--shots 1,2,4,8,16] [--seeds 1,2,3]

METHOD: {methods}, fusion
`clipline finetune METHOD --help` lists every option."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["zeroshot"]:
        from clipline.commands import zeroshot

        print("note: `clipline finetune zeroshot` is now `clipline zeroshot`; the old spelling will be removed "
              "in the next release", file=sys.stderr)
        zeroshot.main(argv[1:])
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

    parser = ConfigParser("clipline finetune sweep", SweepConfig.__doc__)
    parser.add_config(SweepConfig, flat=("paths", "imbalance"))
    config = parser.parse_config(SweepConfig, argv)
    payload = sweep(config)
    print(f"zero-shot top1 {payload['zeroshot']['top1']:.4f}")
    for row in payload["summary"]:
        print(f"{row['method']:>14} {str(row['shots']):>4}-shot: top1 {row['top1_mean']:.4f} ± {row['top1_std']:.4f}")
    print(f"sweep.json, sweep.md, sweep.png in {config.out}")
