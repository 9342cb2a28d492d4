"""Feature cache and the labelled data behind a few-shot run (real shards, known-answer encoder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from data_tools.loader import LoaderConfig, make_loader
from finetune.errors import FinetuneError
from finetune.methods.experiment import make_task, prepare
from finetune.methods.features import cached_features, load_images
from finetune.methods.imbalance import ImbalanceConfig
from finetune.methods.linear_probe import fit_linear_probe
from tests.finetune.fakes import ColourEncoder, write_shards

CLASSES = ["red", "green", "blue", "yellow"]


def test_features_are_encoded_once_then_read_from_the_cache(tmp_path: Path) -> None:
    data = write_shards(tmp_path / "train", CLASSES, per_class=6)
    encoder = ColourEncoder(CLASSES)
    first = cached_features(encoder, data, cache_dir=tmp_path / "cache")
    assert encoder.encoded_images == 24
    second = cached_features(encoder, data, cache_dir=tmp_path / "cache")
    assert encoder.encoded_images == 24  # no re-encoding
    assert torch.equal(first.features, second.features) and first.keys == second.keys
    assert second.label_names(None)[:4] == ["red", "green", "blue", "yellow"]


def test_changed_shards_or_checkpoint_miss_the_cache(tmp_path: Path) -> None:
    data = write_shards(tmp_path / "train", CLASSES, per_class=3)
    encoder = ColourEncoder(CLASSES)
    cached_features(encoder, data, cache_dir=tmp_path / "cache")
    shard = sorted(data.glob("*.tar"))[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    cached_features(encoder, data, cache_dir=tmp_path / "cache")
    assert encoder.encoded_images == 24
    encoder.checkpoint_id = "another-checkpoint"
    cached_features(encoder, data, cache_dir=tmp_path / "cache")
    assert encoder.encoded_images == 36


def test_probe_on_real_shards_fixes_a_permuted_zero_shot_head(tmp_path: Path) -> None:
    train = write_shards(tmp_path / "train", CLASSES, per_class=10)
    evaluation = write_shards(tmp_path / "eval", CLASSES, per_class=5)
    encoder = ColourEncoder(CLASSES, perm=[1, 2, 3, 0])  # colour k looks like class k+1 to the text tower
    prep = prepare(encoder, train_data=str(train), eval_data=str(evaluation), feature_cache=str(tmp_path / "c"))
    assert prep.classnames == CLASSES
    zero_shot = (prep.eval_x @ prep.zeroshot_weights.T).argmax(1)
    assert (zero_shot == prep.eval_y).float().mean() == 0
    task, split = make_task(prep, shots=2, seed=1)
    assert len(task.train_y) == 8 and len(task.val_y) == 8
    head = fit_linear_probe(task).head
    assert (head(prep.eval_x).argmax(1) == prep.eval_y).float().mean() == 1.0


def test_label_field_selects_another_labelling(tmp_path: Path) -> None:
    fields = {"warmth": ["warm", "cold"]}  # class c gets warmth[c % 2]
    train = write_shards(tmp_path / "train", CLASSES, per_class=4, label_fields=fields)
    prep = prepare(ColourEncoder(CLASSES), train_data=str(train), eval_data=str(train), label_field="warmth",
                   feature_cache=str(tmp_path / "c"))
    assert prep.classnames == ["warm", "cold"]
    assert prep.train_y.tolist()[:4] == [0, 1, 0, 1]
    task, _ = make_task(prep, shots=8, seed=0, imbalance=ImbalanceConfig(class_weight=True))
    assert torch.bincount(task.train_y).tolist() == [8, 8]


def test_eval_classes_missing_from_train_are_named(tmp_path: Path) -> None:
    train = write_shards(tmp_path / "train", CLASSES[:3], per_class=4)
    evaluation = write_shards(tmp_path / "eval", CLASSES, per_class=2)
    with pytest.raises(FinetuneError, match=r"1 eval classes in .* are not in the training data: 'yellow'"):
        prepare(ColourEncoder(CLASSES), train_data=str(train), eval_data=str(evaluation),
                feature_cache=str(tmp_path / "c"))


def test_unlabelled_shards_say_which_label_fields_exist(tmp_path: Path) -> None:
    train = write_shards(tmp_path / "train", CLASSES, per_class=2, label="none",
                         label_fields={"warmth": ["warm", "cold"]})
    with pytest.raises(FinetuneError, match="label_fields lists: warmth|one of: warmth"):
        prepare(ColourEncoder(CLASSES), train_data=str(train), eval_data=str(train), feature_cache=str(tmp_path / "c"))


def test_load_images_returns_the_named_samples_in_order(tmp_path: Path) -> None:
    data = write_shards(tmp_path / "train", CLASSES, per_class=5)
    encoder = ColourEncoder(CLASSES)
    everything = {}
    for batch in make_loader(str(data), LoaderConfig(batch_size=7, num_workers=0), image_transform=encoder.preprocess):
        everything.update(zip(batch["key"], batch["image"]))
    keys = sorted(everything)[::-3]
    images = load_images(data, keys, encoder.preprocess)
    assert images.shape == (len(keys), 3, 16, 16)
    for key, image in zip(keys, images):
        assert torch.allclose(image.float(), everything[key], atol=1e-2)  # stored as half
    with pytest.raises(FinetuneError, match="vanished"):
        load_images(data, ["no-such-key"], encoder.preprocess)
