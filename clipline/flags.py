"""The one flag generator: typed keyword-only dataclasses <-> `--dashed-flags`.

Every field of a config dataclass becomes one flag, named by its path with
dashes (`batch_size` -> `--batch-size`), typed and checked by jsonargparse
(public API only), with the field's docstring as its help. A field whose type
is itself a dataclass is a group: its fields become `--group.field`
(`--method.min-steps`), or plain `--field` when the group is listed in `flat`
(a command's own fields next to a library config, where no name repeats).
Booleans are `--flag / --no-flag`. Fields without a default are required.

    config = parse_config(FusionRunConfig, argv, prog="clipline finetune fusion", flat=("head",))

The parsed namespace holds every value under its field path, so
`config_from_args` builds the same nested dataclasses back: each value is
parsed once, where it enters, and nothing below the command sees flags.

The libraries name config fields in backticks in their error messages
(`` `batch_size` must be >= 1 ``); every parser made inside `noted_spellings`
notes how its command line spells each field, and `spelled` rewrites such a
message for that command line (`--batch-size must be >= 1`).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from operator import attrgetter
from typing import Any, TypeVar

import docstring_parser
from jsonargparse import ArgumentParser, Namespace

T = TypeVar("T")
FIELD_MENTION = re.compile(r"`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)`")
_NOTED: ContextVar[dict[str, str] | None] = ContextVar("noted_spellings", default=None)


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """One leaf field of a (nested) config dataclass."""

    path: str
    """Dotted path from the top config (`method.training.lr`)."""
    flag: str
    """Its command-line spelling (`--method.training.lr`, or `--lr` in a flat group)."""
    type: Any
    """The field's type hint."""
    default: Any
    """Its default (from the parent's default instance), or dataclasses.MISSING when required."""
    doc: str
    """The field's docstring."""


def config_fields(cls: type, *, flat: Collection[str] = (), skip: Collection[str] = (),
                  prefix: str = "") -> list[ConfigField]:
    """Every leaf field of `cls` (groups expanded), in declaration order; `skip` names paths to leave out.

    `prefix` puts the whole config under a group of that name (`method` -> `--method.lr`).
    """
    start = f"{prefix}." if prefix else ""
    fields = list(_walk(cls, prefix=start, flag_prefix=_dashed(start), defaults=None, flat=set(flat),
                        skip=set(skip)))
    seen: dict[str, str] = {}
    for item in fields:
        if item.flag in seen:
            raise TypeError(f"{cls.__name__}: {item.path} and {seen[item.flag]} both make {item.flag}")
        seen[item.flag] = item.path
    return fields


def config_from_args(cls: type[T], args: Namespace, *, given: Mapping[str, Any] | None = None, prefix: str = "") -> T:
    """Build `cls` (and its groups) from the values `ConfigParser.add_config` parsed.

    `given` maps field paths to values set by the caller instead (e.g. a skipped field).
    """
    hints = typing.get_type_hints(cls)
    given = given or {}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        path = f"{prefix}.{field.name}" if prefix else field.name
        if path in given:
            values[field.name] = given[path]
        elif dataclasses.is_dataclass(hints[field.name]):
            values[field.name] = config_from_args(hints[field.name], args, given=given, prefix=path)
        else:
            values[field.name] = args[path]
    return cls(**values)


class ConfigParser(ArgumentParser):
    """A jsonargparse parser for typed configs whose errors name the flags, not the field paths."""

    def __init__(self, prog: str, description: str | None = None, **kwargs: Any) -> None:
        super().__init__(prog=prog, description=description, exit_on_error=False, **kwargs)
        self.flag_names: dict[str, str] = {}

    def add_config(self, cls: type, *, flat: Collection[str] = (), positional: Collection[str] = (),
                   skip: Collection[str] = (), prefix: str = "", short: Mapping[str, str] | None = None) -> None:
        """One flag per leaf field of `cls`.

        `positional` names top-level fields taken by position; `short` gives a field path a short alias (`-k`).
        """
        for item in config_fields(cls, flat=flat, skip=skip, prefix=prefix):
            kwargs: dict[str, Any] = {"help": " ".join(item.doc.split())}  # jsonargparse formats help without %
            required = item.default is dataclasses.MISSING
            if item.path in positional:
                many = typing.get_origin(item.type) is list
                if many and not required:
                    kwargs.update(nargs="*", default=item.default)
                elif many:
                    kwargs.update(nargs="+")
                self.add_argument(item.path, type=typing.get_args(item.type)[0] if many else item.type, **kwargs)
                continue
            kwargs.update({"action": argparse.BooleanOptionalAction} if item.type is bool else {"type": item.type})
            kwargs.update({"required": True} if required else {"default": item.default})
            self.add_argument(*([short[item.path]] if short and item.path in short else []), item.flag,
                              dest=item.path, **kwargs)
            self.flag_names[item.path] = item.flag
        note_spellings(self.flag_names)

    def parse(self, argv: list[str] | None) -> Namespace:
        """The parsed values of `argv` (None: sys.argv[1:]); argparse.ArgumentError in one line naming the flag
        when a value is wrong."""
        try:
            return self.parse_args(argv)
        except argparse.ArgumentError as err:
            raise argparse.ArgumentError(None, self._flag_spelling(" ".join(str(err).split()))) from err

    def _flag_spelling(self, message: str) -> str:
        message = re.sub(r'Parser key "([^"]+)"', lambda m: self.flag_names.get(m.group(1), m.group(1)), message)
        required = re.search(r"the following arguments are required: (.*)", message)
        if required:
            names = ", ".join(self.flag_names.get(n.strip(), n.strip()) for n in required.group(1).split(","))
            message = message[: required.start(1)] + names
        return message


def parse_config(cls: type[T], argv: list[str] | None, *, prog: str, description: str | None = None,
                 flat: Collection[str] = (), positional: Collection[str] = (),
                 short: Mapping[str, str] | None = None) -> T:
    """Parse `argv` (None: sys.argv[1:]) into `cls` with a parser of its own flags only (raises
    argparse.ArgumentError)."""
    parser = ConfigParser(prog, description or cls.__doc__)
    parser.add_config(cls, flat=flat, positional=positional, short=short)
    return config_from_args(cls, parser.parse(argv))


def parse_script_config(cls: type[T], argv: list[str] | None, *, prog: str, description: str | None = None,
                        flat: Collection[str] = (), positional: Collection[str] = ()) -> T:
    """`parse_config` for a script's `__main__` (benchmarks): a bad command line is one line,
    `PROG: error: ...`, and exit status 2, as argparse does, not a traceback."""
    try:
        return parse_config(cls, argv, prog=prog, description=description, flat=flat, positional=positional)
    except argparse.ArgumentError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


@contextmanager
def noted_spellings() -> Iterator[dict[str, str]]:
    """Field path -> its spelling on this command line, as every ConfigParser made inside notes it."""
    token = _NOTED.set({})
    try:
        yield _NOTED.get()
    finally:
        _NOTED.reset(token)


def note_spellings(spellings: Mapping[str, str]) -> None:
    """Note how this command line spells some fields (a flag, or pretrain's `key=value` key); outside
    `noted_spellings` nothing is kept."""
    noted = _NOTED.get()
    if noted is not None:
        noted.update(spellings)


def spelled(message: str, spellings: Mapping[str, str]) -> str:
    """`message` with each field it names in backticks spelled as the command line writes it.

    A name is a field path or its last parts (`batch_size` for `embed.batch_size`); one that matches no
    field, or fields spelled differently, stays as written.
    """
    def spell(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in spellings:
            return spellings[name]
        found = {flag for path, flag in spellings.items() if path.endswith(f".{name}")}
        return found.pop() if len(found) == 1 else match.group(0)

    return FIELD_MENTION.sub(spell, message)


def config_values(config: Any, *, flat: Collection[str] = ()) -> dict[str, Any]:
    """The leaf values of `config` keyed as its flags read (`--max-k` -> max_k), e.g. to record a command."""
    return {item.flag[2:].replace("-", "_"): attrgetter(item.path)(config)
            for item in config_fields(type(config), flat=flat)}


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> docstring, over the dataclass hierarchy (each class's source holds its own fields' docs)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update({p.arg_name: p.description or "" for p in docstring_parser.parse_from_object(klass).params})
    return docs


def _walk(cls: type, *, prefix: str, flag_prefix: str, defaults: Any, flat: set[str],
          skip: set[str]) -> Iterator[ConfigField]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
        path = prefix + field.name
        if path in skip:
            continue
        default = _default(field, defaults)
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            group_flag_prefix = flag_prefix if path in flat else f"{flag_prefix}{_dashed(field.name)}."
            yield from _walk(hint, prefix=f"{path}.", flag_prefix=group_flag_prefix,
                             defaults=None if default is dataclasses.MISSING else default, flat=flat, skip=skip)
            continue
        yield ConfigField(path=path, flag=f"--{flag_prefix}{_dashed(field.name)}", type=hint, default=default,
                          doc=docs.get(field.name, ""))


def _default(field: dataclasses.Field, parent_defaults: Any) -> Any:
    """A field's default: the parent default instance's value (a group's factory may change it), else its own."""
    if parent_defaults is not None:
        return getattr(parent_defaults, field.name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default  # dataclasses.MISSING when the field has none


def _dashed(name: str) -> str:
    return name.replace("_", "-")
