"""`clipline pretrain --config NAME [--train-data DIR] [--val-data DIR] [--out RUN] [--resume latest] [key=value ...]`

Thin: parse, resolve the named config with its `key=value` overrides, take the
in-loop evaluators from `evaluate.in_loop.evaluators_for`, call
`pretrain.train.train`. The config keys and their docs come from the
dataclasses in pretrain/config.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from dataclasses import dataclass, field

from jsonargparse import DefaultHelpFormatter

from clipline.commands.errors import reported_errors
from clipline.flags import ConfigParser, config_fields, config_from_args, note_spellings
from data_tools.output_paths import check_output_dir
from pretrain.config import TrainConfig, apply_overrides
from pretrain.named_configs import DEFAULT_CONFIG, named_config
from pretrain.errors import PretrainError

LOG = logging.getLogger("pretrain")


@dataclass(kw_only=True)
class PretrainCommandConfig:
    """Contrastive image-text pretraining on shards."""

    config: str = DEFAULT_CONFIG
    """Named run config: tiny, tiny-debug, emoji-small, emoji-lit-minilm, emoji-lit-rn, emoji-lit-rn-raw."""
    train_data: str | None = None
    """Training shard directory."""
    train_data_weights: str | None = None
    """One weight per `::` source of --train-data, e.g. 3,1 (samples of the first drawn 3x as often; shards
    resampled)."""
    val_data: str | None = None
    """Validation shards for in-loop retrieval R@k (and zero-shot if labelled)."""
    out: str | None = None
    """Run directory (default runs/<config>)."""
    resume: str | None = None
    """'latest' (newest checkpoint in --out) or a checkpoint/run dir."""
    overrides: list[str] = field(default_factory=list)
    """Config overrides key=value, e.g. optim.lr=3e-4 (keys below)."""


# TrainConfig field -> the flag of this command that sets it (the other fields are set by key=value)
FLAG_FIELDS = {"data.train_data": "train_data", "data.train_data_weights": "train_data_weights",
               "data.val_data": "val_data", "out": "out", "resume": "resume"}


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the config-key table printed as written."""


def build_parser() -> ConfigParser:
    parser = ConfigParser("clipline pretrain", PretrainCommandConfig.__doc__, epilog=config_keys_help(),
                          formatter_class=HelpFormatter)
    parser.add_config(PretrainCommandConfig, positional=("overrides",))
    # error lines name a TrainConfig field as the user sets it: the flag above, else its `key=value` key
    keys = {f.path: f.path for f in config_fields(TrainConfig)}
    note_spellings(keys | {path: parser.flag_names[name] for path, name in FLAG_FIELDS.items()})
    return parser


def config_keys_help() -> str:
    """The `key=value` keys with types and docs, generated from the config dataclasses."""
    lines = [f"  {f.path:34s} {' '.join(f.doc.split())}" for f in config_fields(TrainConfig)]
    return "config keys (key=value; a unique last part is enough, e.g. lr=3e-4):\n" + "\n".join(lines)


def resolve_config(command: PretrainCommandConfig) -> TrainConfig:
    """The named config, its overrides applied, then the dedicated flags (which win)."""
    config = apply_overrides(named_config(command.config), command.overrides)
    given = {path: getattr(command, name) for path, name in FLAG_FIELDS.items() if getattr(command, name) is not None}
    if "data.train_data_weights" in given:
        given["data.train_data_weights"] = parse_weights(given["data.train_data_weights"])
    data = {path.removeprefix("data."): v for path, v in given.items() if path.startswith("data.")}
    run = {path: v for path, v in given.items() if not path.startswith("data.")}
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **data), **run)


def parse_weights(text: str) -> tuple[float, ...]:
    """`3,1` -> (3.0, 1.0); pretrain.config.validate checks there is one per source."""
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise PretrainError(f"--train-data-weights {text!r} must be numbers separated by commas, e.g. 3,1") from None


def _log_to_stderr() -> None:
    """Our progress lines on stderr; open_clip's INFO chatter on the root logger stays quiet."""
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pretrain: %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _log_to_stderr()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # loader workers fork after tokenizer use
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return
    with reported_errors("pretrain"):
        config = resolve_config(config_from_args(PretrainCommandConfig, build_parser().parse(argv)))
        check_output_dir(config.run_dir, create=False)  # a file at --out fails before the model is built
        from evaluate.in_loop import evaluators_for  # the command wires the layer above pretrain
        from pretrain.train import train

        result = train(config, evaluators=evaluators_for(config.data.val_data))
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} at step {result.step}; checkpoint {result.checkpoint}; "
              f"continue with --out {result.run_dir} --resume latest", file=sys.stderr)
        sys.exit(130 if result.stopped_by == "SIGINT" else 143)
    if result.main_process:  # one line per run, not per process
        LOG.info("done: step %d, loss %.4f, checkpoint %s", result.step, result.loss, result.checkpoint)
