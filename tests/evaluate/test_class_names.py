"""Where a sample's label comes from with --label-field: top level of .json, then `labels`, then .cls."""

from __future__ import annotations

from evaluate.class_names import cls_class_names, field_label, label_field_names, sample_label

CLASSES = ["cat", "dog"]


def test_top_level_wins_over_labels_which_wins_over_cls() -> None:
    both = {"category": "animals", "labels": {"category": "plants"}}
    assert sample_label(both, 1, "category", CLASSES) == "animals"
    assert sample_label({"labels": {"category": "plants"}}, 1, "category", CLASSES) == "plants"
    assert sample_label({"caption": "x"}, 1, "category", CLASSES) == "dog"  # .cls indexes dataset.json classes
    assert sample_label({"caption": "x"}, -1, "category", CLASSES) is None
    assert sample_label({"label": "cat"}, -1, "category", CLASSES) is None  # no field, no .cls: not `label`


def test_without_a_field_cls_then_label() -> None:
    assert sample_label({"label": "cat"}, 1, None, CLASSES) == "dog"
    assert sample_label({"label": "cat"}, -1, None, CLASSES) == "cat"


def test_values_that_are_not_names_are_no_label() -> None:
    assert field_label({"category": {"nested": 1}, "labels": {"category": "x"}}, "category") == "x"
    assert field_label({"category": True}, "category") is None and field_label({"category": ""}, "category") is None
    assert field_label({"category": 3}, "category") == "3"


def test_field_hints_list_top_level_keys_but_not_descriptions() -> None:
    metas = [{"key": "0001", "caption": "a cat", "url": "http://x", "category": "animals", "labels": {"kind": "pet"}}]
    assert label_field_names(metas, {"label_fields": {"colour": []}}) == ["colour", "kind", "category"]


def test_cls_stands_for_a_field_only_where_it_indexes_that_fields_classes() -> None:
    info = {"classes": CLASSES, "label_fields": {"animal": CLASSES, "legs": ["four", "two"]}}
    assert cls_class_names(info, None) == cls_class_names(info, "animal") == cls_class_names(info, "cls") == CLASSES
    assert cls_class_names(info, "legs") == [] and cls_class_names(info, "colur") == []  # a typo is no .cls
    assert sample_label({"caption": "x"}, 0, "legs", cls_class_names(info, "legs")) is None
