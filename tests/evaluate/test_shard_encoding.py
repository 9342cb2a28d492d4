"""The shared evaluation encoding loop: sample limit, precision scope, worker default, agreement with a plain pass."""

from __future__ import annotations

from pathlib import Path

import torch

from data_tools.loader import LoaderConfig, make_loader
from evaluate.shard_encoding import EncodingConfig, ShardImageFeatures
from pretrain.precision import resolve_precision


class RecordingEncoder:
    """Mean colour as a 3-d feature; records whether autocast was on inside each forward."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.autocast_seen: list[bool] = []

    @staticmethod
    def preprocess(image) -> torch.Tensor:
        return torch.tensor(list(image.resize((4, 4)).getdata()), dtype=torch.float32).T.reshape(3, 4, 4) / 255

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return images.mean(dim=(2, 3)) + 0.1  # (B, 3); not normalised, the loop does that


def test_features_match_a_plain_loader_pass_and_stop_at_max_samples(emoji_shards: Path) -> None:
    encoder = RecordingEncoder()
    images = ShardImageFeatures(encoder, emoji_shards, EncodingConfig(batch_size=10, max_samples=25, num_workers=0))
    batches = list(images)
    assert [len(batch["key"]) for _, batch in batches] == [10, 10, 5]  # the last batch cut, not over-read
    assert all(len(batch["meta"]) == len(batch["image"]) == f.shape[0] for f, batch in batches)
    features = torch.cat([f for f, _ in batches])
    reference = next(iter(make_loader(emoji_shards, LoaderConfig(batch_size=25, num_workers=0),
                                      image_transform=encoder.preprocess)))
    expected = torch.nn.functional.normalize(reference["image"].mean(dim=(2, 3)) + 0.1, dim=-1)
    torch.testing.assert_close(features, expected)
    assert [k for _, batch in batches for k in batch["key"]] == reference["key"]
    assert images.total == 25 and images.skipped == {}


def test_bf16_is_applied_inside_the_forward_only(emoji_shards: Path) -> None:
    encoder = RecordingEncoder()
    for features, _ in ShardImageFeatures(encoder, emoji_shards,
                                          EncodingConfig(batch_size=16, num_workers=0, precision="bf16")):
        assert not torch.is_autocast_enabled("cpu")  # the caller's code between batches runs in fp32
        assert features.dtype == torch.float32
    assert encoder.autocast_seen == [True, True, True]
    assert resolve_precision(encoder, "fp32") == "fp32" and resolve_precision(encoder, "bf16") == "bf16"


def test_default_workers_follow_the_machine(monkeypatch, emoji_shards: Path) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert ShardImageFeatures(RecordingEncoder(), emoji_shards, EncodingConfig(num_workers=None)).num_workers == 0


def test_one_rank_of_a_distributed_job_still_encodes_every_sample(monkeypatch, emoji_shards: Path) -> None:
    # in-loop evaluation runs on rank 0 only and embedding splits shards itself: neither may get a rank's share
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    images = ShardImageFeatures(RecordingEncoder(), emoji_shards, EncodingConfig(num_workers=0))
    keys = [k for _, batch in images for k in batch["key"]]
    assert len(keys) == len(set(keys)) == 48
