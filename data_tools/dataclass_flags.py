"""Command-line flags generated from keyword-only dataclasses: `field_name` -> `--field-name`.

jsonargparse's own `add_class_arguments` names flags with underscores; the command
line in DESIGN.md uses dashes (`--image-size`), so we generate the flags ourselves
from each field's type, default and docstring and let jsonargparse check the types.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

import docstring_parser
from jsonargparse import ArgumentParser, Namespace

T = TypeVar("T")


def add_dataclass_flags(parser: ArgumentParser, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """One `--flag` per field of `cls` (bools become `--flag/--no-flag`); fields without default are required."""
    hints = typing.get_type_hints(cls)
    docs = {p.arg_name: p.description for p in docstring_parser.parse_from_object(cls).params}
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        has_default = field.default is not dataclasses.MISSING
        kwargs: dict[str, Any] = {"help": (docs.get(field.name) or "").replace("%", "%%")}
        if hints[field.name] is bool:
            kwargs.update(action=argparse.BooleanOptionalAction, default=field.default)
        else:
            kwargs.update(type=hints[field.name])
            kwargs.update(default=field.default) if has_default else kwargs.update(required=True)
        parser.add_argument(flag, **kwargs)


def dataclass_from_namespace(cls: type[T], namespace: Namespace, exclude: tuple[str, ...] = ()) -> T:
    """Build `cls` from the parsed values of its flags."""
    values = {f.name: namespace[f.name] for f in dataclasses.fields(cls) if f.name not in exclude}
    return cls(**values)
