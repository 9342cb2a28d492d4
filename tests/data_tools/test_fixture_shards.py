"""The checked-in emoji fixture is what other packages' tests rely on: keep it honest."""

from __future__ import annotations

import json
from collections import Counter

from data_tools.loader import read_dataset_info
from tests.data_tools.conftest import FIXTURE_SHARDS, read_samples


def test_fixture_is_small_and_described() -> None:
    total_bytes = sum(p.stat().st_size for p in FIXTURE_SHARDS.iterdir())
    assert total_bytes < 1_000_000
    info = read_dataset_info(FIXTURE_SHARDS)
    assert info["num_samples"] == 48 and info["shards"] == {"00000.tar": 24, "00001.tar": 24}
    assert len(info["classes"]) == 10 and info["label_fields"]["category"] == info["classes"]
    assert len(info["label_fields"]["subcategory"]) == 99


def test_fixture_samples_have_labels_captions_and_both_vendors() -> None:
    samples = read_samples(FIXTURE_SHARDS)
    classes = read_dataset_info(FIXTURE_SHARDS)["classes"]
    for s in samples:
        assert s.image.size == (64, 64)
        assert classes[s.label] == s.meta["label"] == s.meta["labels"]["category"]
        assert s.captions[0] == s.meta["caption"] and len(s.captions) >= 3
        assert s.key == s.meta["key"] and s.key.startswith(s.meta["vendor"] + "_")
    assert Counter(s.meta["vendor"] for s in samples) == {"google": 24, "twitter": 24}
    assert len({s.meta["label"] for s in samples}) == 8
    assert Counter(s.meta["concept_split"] for s in samples) == {"train": 32, "val": 16}
    grinning = next(s for s in samples if s.key == "google_1f600")
    assert grinning.captions[:2] == ["grinning face", "an emoji of grinning face"]
    # transparent PNG background became white, not black
    assert grinning.image.getpixel((0, 0)) == (255, 255, 255)
    assert json.loads(json.dumps(grinning.meta))["width"] == 64
