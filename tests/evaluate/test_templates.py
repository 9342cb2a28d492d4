"""Built-in template sets, template files and class files."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluate.class_names import read_class_file
from evaluate.errors import EvaluateError
from evaluate.templates import TEMPLATES, fill_template, load_templates, templates_for_source


def test_builtin_sets_have_a_placeholder_everywhere() -> None:
    assert len(TEMPLATES["imagenet80"]) == 80
    assert len(TEMPLATES["imagenet7"]) == 7
    assert TEMPLATES["imagenet80"][0] == "a bad photo of a {c}."
    for name, templates in TEMPLATES.items():
        assert all("{c}" in t for t in templates), name
        assert load_templates(name) == templates


def test_source_picks_its_set() -> None:
    assert templates_for_source("emoji") == "emoji"
    assert templates_for_source("fashion-mnist") == "fashion"
    assert templates_for_source("csv:/data/x.csv") == "generic"
    assert templates_for_source(None) == "generic"
    assert templates_for_source({"name": "fashion-mnist", "split": "test"}) == "fashion"  # a dict source, by its name


def test_fill_template_keeps_braces_in_class_names() -> None:
    assert fill_template("a photo of a {c}.", "{weird} name") == "a photo of a {weird} name."


def test_template_files_lines_and_json(tmp_path: Path) -> None:
    lines = tmp_path / "t.txt"
    lines.write_text("# prompts\na photo of a {}.\n\n{c} emoji\n")
    assert load_templates(lines) == ["a photo of a {c}.", "{c} emoji"]
    as_json = tmp_path / "t.json"
    as_json.write_text('["a {c}", "the {}"]')
    assert load_templates(as_json) == ["a {c}", "the {c}"]


def test_bad_templates(tmp_path: Path) -> None:
    with pytest.raises(EvaluateError, match="neither a built-in set"):
        load_templates("no-such-set")
    bad = tmp_path / "t.txt"
    bad.write_text("a photo of a {c}.\na photo\n")
    with pytest.raises(EvaluateError, match="'a photo' .* no class placeholder"):
        load_templates(bad)
    empty = tmp_path / "e.txt"
    empty.write_text("\n# only a comment\n")
    with pytest.raises(EvaluateError, match="no templates"):
        load_templates(empty)


def test_class_file_lines_and_json(tmp_path: Path) -> None:
    lines = tmp_path / "c.txt"
    lines.write_text("cat\n dog \nbird\n\n")
    assert read_class_file(lines) == (["cat", "dog", "bird"], ["cat", "dog", "bird"])
    as_json = tmp_path / "c.json"
    as_json.write_text('["cat", "dog"]')
    assert read_class_file(as_json) == (["cat", "dog"], ["cat", "dog"])
    renames = tmp_path / "r.json"
    renames.write_text('{"T-shirt/top": "t-shirt", "Ankle boot": "ankle boot"}')
    assert read_class_file(renames) == (["T-shirt/top", "Ankle boot"], ["t-shirt", "ankle boot"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cat\ndog\ncat\n", "lists 'cat' twice \\(entries 1 and 3\\)"),
        ("cat\n\ndog\n", "empty class name at entry 2"),
        ('["cat", ""]', "empty class name at entry 2"),
        ("cat\n", "one class"),
        ('{"cat": 1}', "JSON list of names or an object"),
        ('{"cat": "pet", "dog": "pet"}', "prompt names\\) lists 'pet' twice"),
    ],
)
def test_bad_class_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / ("c.json" if text.startswith(("[", "{")) else "c.txt")
    path.write_text(text)
    with pytest.raises(EvaluateError, match=message):
        read_class_file(path)
