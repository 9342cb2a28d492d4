"""`clipline finetune METHOD ...` / `python -m finetune METHOD ...`.

METHOD is one of finetune.methods.experiment.METHODS, or `sweep`; a first word
`fusion` is handed to finetune.fusion_cli, and `zeroshot` (the old spelling of
`clipline zeroshot`, kept for one release with a notice) to finetune.zeroshot_cli.
Flags are generated from the option dataclasses (finetune.methods.run,
finetune.methods.sweep) and the method's config dataclass (under --method.*).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from dataclasses import fields, is_dataclass

from jsonargparse import ArgumentParser, set_parsing_settings

from data_tools.dataclass_flags import add_dataclass_flags, dataclass_from_namespace
from finetune.errors import FinetuneError

FORWARDED = {"zeroshot": "finetune.zeroshot_cli", "fusion": "finetune.fusion_cli"}

USAGE = """usage: clipline finetune METHOD --checkpoint RUN --train-data DIR --eval-data DIR --out RUN2 [options]
       clipline finetune sweep --checkpoint RUN --train-data DIR --eval-data DIR --out DIR [--methods ...]
                                [--shots 1,2,4,8,16] [--seeds 1,2,3]

METHOD: {methods}, fusion
`clipline finetune METHOD --help` lists every option."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        if argv[0] == "zeroshot":
            print("note: `clipline finetune zeroshot` is now `clipline zeroshot`; the old spelling will be removed "
                  "in the next release", file=sys.stderr)
        importlib.import_module(FORWARDED[argv[0]]).main(argv[1:])
        return
    from finetune.methods.experiment import METHODS

    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.format(methods=", ".join(METHODS)))
        return
    word, rest = argv[0], argv[1:]
    try:
        if word == "sweep":
            _run_sweep(rest)
        elif word in METHODS:
            _run_method(word, rest)
        else:
            raise FinetuneError(f"unknown method {word!r}; choose one of {', '.join([*METHODS, 'sweep', 'fusion'])}")
    except (FinetuneError, argparse.ArgumentError, *_other_user_errors()) as err:
        message = re.sub(r"\s*\n\s*", "; ", str(err)).strip()
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _run_method(method: str, args: list[str]) -> None:
    from finetune.methods.experiment import METHODS
    from finetune.methods.run import FinetuneOptions, run_finetune, summary_line

    parser = _parser(f"clipline finetune {method}", FinetuneOptions)
    parser.add_class_arguments(METHODS[method].config_cls, nested_key="method", help=f"{method} settings")
    _dashed_nested_flags(parser)
    cfg = parser.parse_args(args)
    options = dataclass_from_namespace(FinetuneOptions, cfg)
    method_config = parser.instantiate_classes(cfg).method
    report = run_finetune(method, options, method_config)
    print(summary_line(report))
    print(f"adapter and report.json in {options.out}")


def _run_sweep(args: list[str]) -> None:
    from finetune.methods.sweep import SweepOptions, run_sweep

    options = dataclass_from_namespace(SweepOptions, _parser("clipline finetune sweep", SweepOptions).parse_args(args))
    payload = run_sweep(options)
    print(f"zero-shot top1 {payload['zeroshot']['top1']:.4f}")
    for row in payload["summary"]:
        print(f"{row['method']:>14} {str(row['shots']):>4}-shot: top1 {row['top1_mean']:.4f} ± {row['top1_std']:.4f}")
    print(f"sweep.json, sweep.md, sweep.png in {options.out}")


def _parser(prog: str, options_cls: type) -> ArgumentParser:
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # field docstrings become --help text
    parser = ArgumentParser(prog=prog, description=options_cls.__doc__, exit_on_error=False)
    # each class in the hierarchy adds its own fields: its source holds their docstrings (the help)
    done: set[str] = set()
    for klass in reversed(options_cls.__mro__):
        if is_dataclass(klass):
            add_dataclass_flags(parser, klass, exclude=tuple(done))
            done |= {f.name for f in fields(klass)}
    return parser


def _dashed_nested_flags(parser: ArgumentParser) -> None:
    """--method.max-iter as well as jsonargparse's --method.max_iter; a bare boolean flag means true.

    The method configs nest (e.g. --method.training.lr), which the flat
    add_dataclass_flags does not cover, so they come from add_class_arguments.
    """
    for action in list(parser._actions):
        for option in list(action.option_strings):
            dashed = option[:2] + option[2:].replace("_", "-")
            if option.startswith("--method.") and not option.endswith("+") and dashed != option:
                action.option_strings.insert(0, dashed)
                parser._option_string_actions[dashed] = action
        if option_is_method_bool(action):
            action.nargs, action.const = "?", True


def option_is_method_bool(action: argparse.Action) -> bool:
    return getattr(action, "_typehint", None) is bool and any(o.startswith("--method.") for o in action.option_strings)


def _other_user_errors() -> tuple[type[Exception], ...]:
    """Errors of the packages finetune calls into that a user causes (bad checkpoint, bad shards)."""
    found: list[type[Exception]] = []
    for module, name in (("evaluate.errors", "EvaluateError"), ("pretrain.errors", "PretrainError"),
                         ("data_tools.errors", "DataError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)
