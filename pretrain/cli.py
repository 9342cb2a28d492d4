"""`clipline pretrain --config NAME [--train-data DIR] [--val-data DIR] [--out RUN] [--resume latest] [key=value ...]`

Thin: parse, resolve the named config with overrides, take the in-loop
evaluators from `evaluate.in_loop.evaluators_for`, call `pretrain.train.train`.
The config keys and their docs come from the dataclasses in pretrain/config.py.
"""

from __future__ import annotations

import logging
import os
import sys

from evaluate.errors import EvaluateError
from pretrain.config import DEFAULT_CONFIG, NAMED_CONFIGS, TrainConfig, apply_overrides, named_config
from pretrain.errors import PretrainError

LOG = logging.getLogger("pretrain")


def build_parser():
    import argparse

    import jsonargparse

    class HelpFormatter(jsonargparse.DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """jsonargparse's help, with the config-key table printed as written."""

    jsonargparse.set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = jsonargparse.ArgumentParser(
        prog="clipline pretrain", description="Contrastive image-text pretraining on shards.",
        epilog=config_keys_help(), formatter_class=HelpFormatter, exit_on_error=False)
    parser.add_argument("--config", type=str, default=DEFAULT_CONFIG,
                        help=f"named run config: {', '.join(NAMED_CONFIGS)} (default {DEFAULT_CONFIG})")
    parser.add_argument("--train-data", type=str | None, default=None, help="training shard directory")
    parser.add_argument("--train-data-weights", type=str | None, default=None,
                        help="one weight per `::` source of --train-data, e.g. 3,1 (samples of the first "
                             "drawn 3x as often; shards resampled)")
    parser.add_argument("--val-data", type=str | None, default=None,
                        help="validation shards for in-loop retrieval R@k (and zero-shot if labelled)")
    parser.add_argument("--out", type=str | None, default=None, help="run directory (default runs/<config>)")
    parser.add_argument("--resume", type=str | None, default=None,
                        help="'latest' (newest checkpoint in --out) or a checkpoint/run dir")
    parser.add_argument("overrides", nargs="*", type=str, default=[],
                        help="config overrides key=value, e.g. optim.lr=3e-4 (keys below)")
    return parser


def config_keys_help() -> str:
    """The `key=value` keys with types and docs, generated from the config dataclasses."""
    import jsonargparse

    keys = jsonargparse.ArgumentParser(prog="", add_help=False)
    keys.add_class_arguments(TrainConfig, "k")
    lines = []
    for action in keys._actions:
        if action.option_strings and action.option_strings[0].startswith("--k.") and action.help != "==SUPPRESS==":
            key = action.option_strings[0][len("--k."):]
            if action.dest.endswith(("CONFIG",)) or "Path to a configuration file" in str(action.help):
                continue
            lines.append(f"  {key:34s} {' '.join(str(action.help or '').split())}")
    return "config keys (key=value; a unique last part is enough, e.g. lr=3e-4):\n" + "\n".join(lines)


def resolve_config(argv: list[str]) -> TrainConfig:
    import argparse

    try:
        args = build_parser().parse_args(argv)
    except argparse.ArgumentError as err:
        raise PretrainError(f"{err} (see clipline pretrain --help)") from err
    overrides = list(args.overrides)
    for flag, key in (("train_data", "data.train_data"), ("val_data", "data.val_data"),
                      ("out", "out"), ("resume", "resume")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.train_data_weights is not None:
        overrides.append(f"data.train_data_weights=[{args.train_data_weights}]")
    return apply_overrides(named_config(args.config), overrides)


def _log_to_stderr() -> None:
    """Our progress lines on stderr; open_clip's INFO chatter on the root logger stays quiet."""
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pretrain: %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False


def _data_error() -> type[Exception]:
    """data_tools' error type: bad shards surface through the loader during training."""
    try:
        from data_tools.errors import DataError
    except ImportError:
        return PretrainError
    return DataError


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _log_to_stderr()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # loader workers fork after tokenizer use
    try:
        if any(a in ("-h", "--help") for a in argv):
            build_parser().print_help()
            return
        config = resolve_config(argv)
        from evaluate.in_loop import evaluators_for  # the command wires the layer above pretrain
        from pretrain.train import train

        result = train(config, evaluators=evaluators_for(config.data.val_data))
    except (PretrainError, EvaluateError, _data_error()) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} at step {result.step}; checkpoint {result.checkpoint}; "
              f"continue with --out {result.run_dir} --resume latest", file=sys.stderr)
        sys.exit(130 if result.stopped_by == "SIGINT" else 143)
    LOG.info("done: step %d, loss %.4f, checkpoint %s", result.step, result.loss, result.checkpoint)
