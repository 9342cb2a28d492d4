"""`clipline data build | inspect | validate` (also `python -m data_tools ...`)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from data_tools.atomic_write import write_json_atomic
from data_tools.build import BuildConfig, build_shards
from data_tools.dataclass_flags import add_dataclass_flags, dataclass_from_namespace
from data_tools.errors import DataError
from data_tools.sources import SOURCE_HELP, SourceOptions, load_source

EXIT_USER_ERROR = 2
EXIT_CORRUPT = 1


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="clipline data", description="Build, inspect and validate WebDataset shards.",
                            exit_on_error=False)
    commands = parser.add_subcommands(dest="command")

    build = ArgumentParser(description="Write img2dataset-compatible shards (.jpg/.txt/.json[/.cls] + dataset.json).",
                           exit_on_error=False)
    build.add_argument("source", type=str, help=f"what to read: {SOURCE_HELP}")
    add_dataclass_flags(build, BuildConfig)
    add_dataclass_flags(build, SourceOptions)
    commands.add_subcommand("build", build, help="build shards from a source")

    inspect = ArgumentParser(description="Counts per shard, caption lengths, class histogram; --grid draws a contact sheet.",
                             exit_on_error=False)
    inspect.add_argument("dir", type=str, help="shard directory")
    inspect.add_argument("--grid", type=Path | None, default=None, help="write a contact sheet PNG here")
    inspect.add_argument("--grid-count", type=int, default=48, help="images on the contact sheet")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    commands.add_subcommand("inspect", inspect, help="summarise a shard directory")

    validate = ArgumentParser(
        description="Read every sample of every shard and report corrupt ones (unreadable or truncated tars, "
        "undecodable images, missing captions). Exit status: 0 if all samples are fine, 1 if any problem was found, "
        "2 on bad arguments.",
        exit_on_error=False,
    )
    validate.add_argument("dir", type=str, help="shard directory")
    validate.add_argument("--out", type=Path | None, default=None, help="also write the JSON report to this file")
    validate.add_argument("--json", action="store_true", help="print the full report as JSON")
    commands.add_subcommand("validate", validate, help="find corrupt samples (exit 1 if any)")
    return parser


def _run_build(args: Namespace) -> None:
    config = dataclass_from_namespace(BuildConfig, args)
    data = load_source(args.source, dataclass_from_namespace(SourceOptions, args))
    info = build_shards(data, config)
    print(json.dumps({k: info[k] for k in ("num_samples", "shards", "skipped", "source")} | {"out": str(config.out)}))


def _run_inspect(args: Namespace) -> None:
    from data_tools.inspect_shards import inspect_shards
    from data_tools.report_text import inspect_text

    report = inspect_shards(args.dir, grid=args.grid, grid_count=args.grid_count)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else inspect_text(report))


def _run_validate(args: Namespace) -> int:
    from data_tools.report_text import validate_text
    from data_tools.validate import validate_shards

    report = validate_shards(args.dir)
    if args.out is not None:
        write_json_atomic(args.out, report)
    print(json.dumps(report, indent=2) if args.json else validate_text(report))
    return 0 if report["ok"] else EXIT_CORRUPT


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except Exception as exc:  # jsonargparse raises ArgumentError and friends; show one line, not a usage dump
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message} (see `clipline data --help`)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    command = args.command
    try:
        if command == "build":
            _run_build(args.build)
        elif command == "inspect":
            _run_inspect(args.inspect)
        else:
            sys.exit(_run_validate(args.validate))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
