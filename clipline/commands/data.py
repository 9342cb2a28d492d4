"""`clipline data build | inspect | validate` (also `python -m data_tools ...`)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from clipline.commands.errors import fail, reported_errors
from clipline.flags import parse_config
from data_tools.atomic_write import write_json_atomic
from data_tools.build import BuildConfig, build_shards
from data_tools.output_paths import check_output_file
from data_tools.sources import SOURCE_HELP, SourceConfig, load_source

EXIT_CORRUPT = 1
USAGE = """usage: clipline data {build,inspect,validate} ...

  build SOURCE --out DIR      write img2dataset-compatible shards; SOURCE = """ + SOURCE_HELP + """
  inspect DIR [--grid PNG]    counts per shard, caption lengths, class histogram, a contact sheet
  validate DIR                find corrupt samples (exit 1 if any)

`clipline data COMMAND --help` lists each command's options."""


@dataclass(kw_only=True)
class DataBuildConfig:
    """Write img2dataset-compatible shards (.jpg/.txt/.json[/.cls] + dataset.json)."""

    source: str
    """What to read: emoji | fashion-mnist | folder:PATH | csv:PATH | jsonl:PATH | parquet:PATH."""
    build: BuildConfig
    """How to write the shards."""
    read: SourceConfig = field(default_factory=SourceConfig)
    """Options that only some sources read."""


@dataclass(kw_only=True)
class InspectConfig:
    """Counts per shard, caption lengths, class histogram; --grid draws a contact sheet."""

    dir: str
    """Shard directory."""
    grid: Path | None = None
    """Write a contact sheet PNG here."""
    grid_count: int = 48
    """Images on the contact sheet."""
    json: bool = False
    """Print the report as JSON."""


@dataclass(kw_only=True)
class ValidateConfig:
    """Read every sample of every shard and report corrupt ones (unreadable or truncated tars, undecodable
    images, missing captions). Exit status: 0 if all samples are fine, 1 if any problem was found, 2 on bad
    arguments."""

    dir: str
    """Shard directory."""
    out: Path | None = None
    """Also write the JSON report to this file."""
    json: bool = False
    """Print the full report as JSON."""


def run_build(config: DataBuildConfig) -> int:
    info = build_shards(load_source(config.source, config.read), config.build)
    print(json.dumps({k: info[k] for k in ("num_samples", "shards", "skipped", "source")}
                     | {"out": str(config.build.out)}))
    return 0


def run_inspect(config: InspectConfig) -> int:
    from data_tools.inspect_shards import inspect_shards
    from data_tools.report_text import inspect_text

    if config.grid is not None:
        check_output_file(config.grid, create=False)
    report = inspect_shards(config.dir, grid=config.grid, grid_count=config.grid_count)
    print(json.dumps(report, indent=2, ensure_ascii=False) if config.json else inspect_text(report))
    return EXIT_CORRUPT if report["incomplete_build"] else 0


def run_validate(config: ValidateConfig) -> int:
    from data_tools.report_text import validate_text
    from data_tools.validate import validate_shards

    if config.out is not None:
        check_output_file(config.out, create=False)
    report = validate_shards(config.dir)
    if config.out is not None:
        write_json_atomic(config.out, report)
    print(json.dumps(report, indent=2) if config.json else validate_text(report))
    return 0 if report["ok"] else EXIT_CORRUPT


COMMANDS = {"build": (DataBuildConfig, run_build, ("source",)), "inspect": (InspectConfig, run_inspect, ("dir",)),
            "validate": (ValidateConfig, run_validate, ("dir",))}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    word, rest = argv[0], argv[1:]
    if word not in COMMANDS:
        fail(f"unknown command {word!r}; choose one of {', '.join(COMMANDS)} (see `clipline data --help`)")
    config_cls, run, positional = COMMANDS[word]
    with reported_errors(f"data {word}"):
        code = run(parse_config(config_cls, rest, prog=f"clipline data {word}", flat=("build", "read", "build.distributed"),
                                positional=positional))
    if code:
        sys.exit(code)
