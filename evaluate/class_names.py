"""Where zero-shot class names and each sample's true class come from.

Class names: a user file (`--classes`), else the shards' dataset.json
(`classes`, or `label_fields[FIELD]` with `--label-field FIELD`), else the
sorted set of label values found. A sample's class with `--label-field FIELD`:
`.json` `FIELD` at the top level (how img2dataset and hand-made shards keep
metadata), else `.json` `labels[FIELD]` (how `clipline data build` writes
them), else `.cls` (an index into dataset.json `classes`, where that is the
field's class list: see `cls_class_names`); without a field: `.cls`, else
`.json` `label`. String labels are mapped to classes by name. Names are
matched exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluate.errors import EvaluateError

# top-level .json keys that describe a sample rather than label it (left out of the hints)
NOT_LABELS = frozenset({"key", "caption", "url", "source", "status", "error_message", "sha256", "exif"})


def read_class_file(path: str | Path) -> tuple[list[str], list[str]]:
    """(class names as the labels spell them, names to put in the prompts) from a file.

    One name per line, or a JSON list of names (both lists equal), or a JSON
    object {label name: prompt name} to prompt with friendlier words
    (e.g. {"T-shirt/top": "t-shirt"}). Duplicates and empty names are errors:
    either would make two prompts compete for one label or give a class
    nothing to say.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluateError(f"class file {path} does not exist; pass a file with one class name per line")
    text = path.read_text(encoding="utf-8")
    origin = f"class file {path}"
    if path.suffix.lower() != ".json" and not text.lstrip().startswith(("[", "{")):
        lines = text.rstrip().splitlines()  # trailing blank lines are not empty classes
        names = validate_class_names([n.strip() for n in lines], origin=origin)
        return names, names
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise EvaluateError(f"{origin} is not valid JSON ({err.msg}, line {err.lineno})") from None
    if isinstance(parsed, dict) and all(isinstance(v, str) for v in parsed.values()):
        labels = validate_class_names([k.strip() for k in parsed], origin=origin)
        prompts = validate_class_names([v.strip() for v in parsed.values()], origin=f"{origin} (prompt names)")
        return labels, prompts
    if not isinstance(parsed, list) or not all(isinstance(n, str) for n in parsed):
        raise EvaluateError(f"{origin} must hold a JSON list of names or an object {{label name: prompt name}}")
    names = validate_class_names([n.strip() for n in parsed], origin=origin)
    return names, names


def validate_class_names(names: Sequence[str], *, origin: str) -> list[str]:
    if not names:
        raise EvaluateError(f"{origin} lists no classes; zero-shot needs at least two class names")
    if "" in names:
        raise EvaluateError(f"{origin} has an empty class name at entry {names.index('') + 1}; remove the blank entry")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise EvaluateError(
                f"{origin} lists {name!r} twice (entries {seen[name] + 1} and {i + 1}); class names must be unique"
            )
        seen[name] = i
    if len(names) < 2:
        raise EvaluateError(f"{origin} lists one class ({names[0]!r}); zero-shot needs at least two")
    return list(names)


def dataset_class_names(info: dict[str, Any], label_field: str | None, *, data: str) -> list[str] | None:
    """Class names declared by dataset.json, or None when it declares none for this choice."""
    if label_field is None:
        classes = info.get("classes")
        return validate_class_names(classes, origin=f"{data}/dataset.json classes") if classes else None
    fields = info.get("label_fields") or {}
    if label_field in fields:
        return validate_class_names(fields[label_field], origin=f"{data}/dataset.json label_fields[{label_field!r}]")
    return None  # not declared (e.g. a top-level .json key): names are collected from the samples


def field_label(meta: dict[str, Any], field: str) -> str | None:
    """`field` of a sample's .json: at the top level, else under `labels`; None unless a name or number."""
    for source in (meta, meta.get("labels")):
        value = source.get(field) if isinstance(source, dict) else None
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != "":
            return str(value)
    return None


def label_parts(meta: dict[str, Any]) -> dict[str, Any]:
    """What of a sample's .json a label can come from: its top-level names and numbers, and `labels`."""
    parts = {k: v for k, v in meta.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    return parts | {"label": meta.get("label"), "labels": dict(meta.get("labels") or {})}


def label_field_names(metas: Sequence[dict[str, Any]], info: dict[str, Any]) -> list[str]:
    """Fields a `--label-field` could name: dataset.json's, then the samples' `labels` and top-level string keys."""
    names = dict.fromkeys(info.get("label_fields") or {})
    for meta in metas:
        names |= dict.fromkeys(meta.get("labels") or {})
        names |= dict.fromkeys(k for k, v in meta.items() if isinstance(v, str) and k not in NOT_LABELS)
    return list(names)


def cls_class_names(info: dict[str, Any], label_field: str | None) -> list[str]:
    """The names a sample's .cls index stands for when reading `label_field`; [] when .cls is another label.

    .cls indexes dataset.json `classes`: it is the label without a field, for
    `--label-field cls`, and for a field whose declared class list is that same
    list (emoji's `category`). Any other field never falls back to .cls, so a
    misspelt field is an error rather than a silent switch of label.
    """
    classes = list(info.get("classes") or [])
    declared = (info.get("label_fields") or {}).get(label_field)
    return classes if label_field in (None, "cls") or declared == classes else []


def sample_label(meta: dict[str, Any], cls_index: int, label_field: str | None,
                 dataset_classes: Sequence[str]) -> str | None:
    """The class name of one sample, or None when it carries no label of the chosen kind (order: module doc).

    `dataset_classes`: what .cls indexes for this field (`cls_class_names`).
    """
    if label_field is not None:
        value = field_label(meta, label_field)
        if value is not None:
            return value
    if 0 <= cls_index < len(dataset_classes):
        return dataset_classes[cls_index]
    if label_field is not None:
        return None
    value = meta.get("label")
    return None if value is None else str(value)


def label_indices(labels: Sequence[str], classnames: Sequence[str], *, data: str) -> list[int]:
    """Map sample class names to indices in `classnames`; unknown names are an error."""
    index = {name: i for i, name in enumerate(classnames)}
    unknown = sorted({name for name in labels if name not in index})
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise EvaluateError(
            f"{len(unknown)} class name(s) in the labels of {data} are not among the {len(classnames)} classes: "
            f"{shown}{more}; add them to the class file or choose another `label_field`"
        )
    return [index[name] for name in labels]
