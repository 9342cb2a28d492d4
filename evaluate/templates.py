"""Prompt templates for zero-shot classification.

A template is a string with one `{c}` where the class name goes ("a photo of a
{c}."); `{}` (OpenAI's style) is accepted in files too. Built-in sets are named;
`load_templates` also reads a user file (one template per line, or a JSON list).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from evaluate.errors import EvaluateError

PLACEHOLDER = "{c}"

# OpenAI's ImageNet prompts come from open_clip as lambdas; render them once with
# our placeholder so every set is plain data.
TEMPLATES: dict[str, list[str]] = {
    "imagenet80": [t(PLACEHOLDER) for t in OPENAI_IMAGENET_TEMPLATES],
    "imagenet7": [t(PLACEHOLDER) for t in SIMPLE_IMAGENET_TEMPLATES],
    "generic": [
        "a photo of a {c}.",
        "a picture of a {c}.",
        "an image of a {c}.",
        "a drawing of a {c}.",
        "{c}",
    ],
    "emoji": [
        "{c}",
        "an emoji of {c}.",
        "a {c} emoji.",
        "an emoji from the {c} category.",
        "an icon of {c}.",
        "a cartoon drawing of {c}.",
    ],
    "fashion": [
        "a photo of a {c}.",
        "a black and white photo of a {c}.",
        "a low resolution photo of a {c}.",
        "a product photo of a {c}.",
        "a piece of clothing: {c}.",
        "{c}",
    ],
}

# dataset.json "source" -> the built-in set that suits it (used when --templates auto)
SOURCE_TEMPLATES = {"emoji": "emoji", "fashion-mnist": "fashion"}
FALLBACK_TEMPLATES = "generic"


def templates_for_source(source: str | dict[str, Any] | None) -> str:
    """Name of the built-in set for dataset.json's `source` (`emoji`, `fashion-mnist`, ...; a dict by its name)."""
    if isinstance(source, dict):  # tolerate {"name": "emoji", ...}
        source = source.get("name") or source.get("kind")
    key = (source if isinstance(source, str) else "").split(":", 1)[0].lower()
    return SOURCE_TEMPLATES.get(key, FALLBACK_TEMPLATES)


def load_templates(spec: str | Path) -> list[str]:
    """Templates from a built-in set name or a file (lines or JSON list).

    Raises EvaluateError for an unknown name, an unreadable file, or a template
    without a class placeholder.
    """
    spec_str = str(spec)
    if spec_str in TEMPLATES:
        return list(TEMPLATES[spec_str])
    path = Path(spec_str)
    if not path.is_file():
        raise EvaluateError(
            f"`templates` {spec_str!r} is neither a built-in set ({', '.join(TEMPLATES)}) "
            "nor a file; pass one of those names or a file with one template per line"
        )
    return _validate(_read_template_file(path), origin=str(path))


def _read_template_file(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise EvaluateError(f"template file {path} is not valid JSON ({err.msg}, line {err.lineno})") from None
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise EvaluateError(f"template file {path} must hold a JSON list of strings")
        return items
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _validate(templates: list[str], *, origin: str) -> list[str]:
    if not templates:
        raise EvaluateError(f"template file {origin} has no templates; write one per line, e.g. 'a photo of a {{c}}.'")
    normalised = [t.replace("{}", PLACEHOLDER) for t in templates]
    missing = [t for t in normalised if PLACEHOLDER not in t]
    if missing:
        raise EvaluateError(
            f"template {missing[0]!r} in {origin} has no class placeholder; "
            "put {c} (or {}) where the class name goes"
        )
    return normalised


def fill_template(template: str, classname: str) -> str:
    """The prompt for one class. Plain replace, not str.format: class names may hold braces."""
    return template.replace(PLACEHOLDER, classname)
