"""clipline.flags: dataclass fields -> typed dashed flags with help, nested groups, parsed back."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from clipline.flags import ConfigParser, config_fields, config_from_args, parse_config, parse_script_config


@dataclass(kw_only=True)
class Training:
    """Optimiser settings."""

    lr: float = 1e-3
    """Peak learning rate."""
    min_steps: int = 200
    """At least this many steps."""


@dataclass(kw_only=True)
class Method:
    """A method with a nested group."""

    ratios: list[float] = field(default_factory=lambda: [0.2, 0.4])
    """Blend ratios tried."""
    adapt_text: bool = False
    """Also adapt the class embeddings."""
    training: Training = field(default_factory=lambda: Training(lr=1e-2))
    """Optimiser settings (this method's own defaults)."""


@dataclass(kw_only=True)
class Imbalance:
    """Remedies."""

    class_weight: bool = False
    """Weight the loss by inverse class frequency."""


@dataclass(kw_only=True)
class Base:
    """Where the data is."""

    data: str
    """Shard directory to read (100% of it)."""


@dataclass(kw_only=True)
class Run(Base):
    """A run."""

    shots: int | Literal["all"] = 16
    """Samples per class, or 'all'."""
    label_field: str | None = None
    """Label to classify."""
    imbalance: Imbalance = field(default_factory=Imbalance)
    """Imbalance remedies (flat)."""
    method: Method = field(default_factory=Method)
    """Method settings (under --method.)."""


def parser_for(cls: type, **kwargs: object) -> ConfigParser:
    parser = ConfigParser("test")
    parser.add_config(cls, **kwargs)
    return parser


def test_fields_become_dashed_flags_nested_groups_prefixed_flat_groups_not() -> None:
    flags = {f.flag: f.path for f in config_fields(Run, flat=("imbalance",))}
    assert flags == {
        "--data": "data", "--shots": "shots", "--label-field": "label_field",
        "--class-weight": "imbalance.class_weight", "--method.ratios": "method.ratios",
        "--method.adapt-text": "method.adapt_text", "--method.training.lr": "method.training.lr",
        "--method.training.min-steps": "method.training.min_steps",
    }


def test_group_defaults_come_from_the_parents_factory() -> None:
    defaults = {f.path: f.default for f in config_fields(Run)}
    assert defaults["method.training.lr"] == 1e-2  # Method's factory, not Training's own 1e-3
    assert defaults["method.training.min_steps"] == 200


def test_parse_back_into_nested_dataclasses() -> None:
    parser = parser_for(Run, flat=("imbalance",))
    argv = "--data d --shots all --class-weight --method.adapt-text --method.training.min-steps 5 --method.ratios [0.5]"
    args = parser.parse_args(argv.split())
    run = config_from_args(Run, args)
    assert run == Run(data="d", shots="all", imbalance=Imbalance(class_weight=True),
                      method=Method(ratios=[0.5], adapt_text=True, training=Training(lr=1e-2, min_steps=5)))
    assert config_from_args(Run, parser.parse_args(["--data", "d"])) == Run(data="d")


def test_help_is_the_field_docstring_including_inherited_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser_for(Run, flat=("imbalance",)).parse_args(["--help"])
    out = capsys.readouterr().out
    for text in ("Shard directory to read (100% of it).", "Weight the loss by inverse class frequency.",
                 "Peak learning rate.", "--no-method.adapt-text", "--method.training.min-steps"):
        assert text in " ".join(out.split()), text


def test_types_and_required_fields_are_checked() -> None:
    parser = parser_for(Run)
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--data", "d", "--shots", "many"])
    with pytest.raises(argparse.ArgumentError, match="data"):
        parser.parse_args([])
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--data", "d", "--imbalance.class-weight", "maybe"])


def test_a_flag_made_twice_is_refused() -> None:
    @dataclass(kw_only=True)
    class Clash:
        class_weight: bool = False
        """Declared twice."""
        imbalance: Imbalance = field(default_factory=Imbalance)
        """Same field inside."""

    with pytest.raises(TypeError, match="--class-weight"):
        config_fields(Clash, flat=("imbalance",))


def test_positional_and_skipped_fields() -> None:
    @dataclass(kw_only=True)
    class Serve:
        index: list[str]
        """Index directories."""
        port: int = 8000
        """TCP port."""
        api_key: str | None = None
        """Key (read elsewhere)."""

    parser = parser_for(Serve, positional=("index",), skip=("api_key",))
    config = config_from_args(Serve, parser.parse_args(["a", "b", "--port", "9"]), given={"api_key": "k"})
    assert config == Serve(index=["a", "b"], port=9, api_key="k")
    assert parse_config(Serve, ["x"], prog="serve", positional=("index",)).index == ["x"]


def test_a_script_with_a_bad_command_line_says_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_script_config(Run, ["--data", "d", "--shots", "many"], prog="benchmarks/x.py")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("benchmarks/x.py: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert parse_script_config(Run, ["--data", "d"], prog="benchmarks/x.py").data == "d"
