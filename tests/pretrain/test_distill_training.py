"""Distillation in the training loop: the loss it adds, its log terms, projection + exact resume, bad teachers."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import open_clip
import pytest
import torch

from data_tools.loader import LoaderConfig, make_loader
from pretrain import checkpoint
from pretrain.config import apply_overrides
from pretrain.named_configs import named_config
from pretrain.distributed import Distributed
from pretrain.encoder import Encoder
from pretrain.errors import PretrainError
from pretrain.losses import clip_loss
from pretrain.losses.distill_loss import distill_loss
from pretrain.run_log import read_metrics
from pretrain.teacher import image_adapter
from pretrain.train import Trainer, train
from tests.clipline.running import error_line
from tests.pretrain.distributed_helper import global_batches, save_teacher
from tests.pretrain.test_cli import PRETRAIN_TINY_DEBUG
from tests.pretrain.test_train import debug_config

DISTILL_OPTIONS = ["temperature=2", "kl_weight=0.7", "feature_weight=0.4"]


@pytest.fixture(scope="module")
def minilm_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same embedding size as clip-tiny-64 (256), but a MiniLM text tower with its own tokenizer."""
    return save_teacher(tmp_path_factory.mktemp("minilm-teacher"), "clip-tiny-64-minilm", seed=1)


@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clip-small-64 embeds in 384 dimensions: the student's 256 need a projection."""
    return save_teacher(tmp_path_factory.mktemp("wide-teacher"), "clip-small-64", seed=2)


@pytest.fixture(scope="module")
def emoji_batch(emoji_shards: Path) -> dict:
    """One real batch of 8 fixture emoji, as the shard loader gives it (eval transform, first caption)."""
    transform = open_clip.transform.image_transform_v2(open_clip.transform.PreprocessCfg(size=64), is_train=False)
    loader = make_loader(emoji_shards, LoaderConfig(batch_size=8, num_workers=0, caption="first"),
                         image_transform=transform, tokenize=open_clip.get_tokenizer("clip-tiny-64"))
    return next(iter(loader))


def split(batch: dict, parts: int) -> list[dict]:
    rows = len(batch["caption"]) // parts
    return [{key: batch[key][i * rows:(i + 1) * rows] for key in ("image", "text", "caption")} for i in range(parts)]


def test_first_step_loss_is_clip_plus_distillation_of_the_same_batch(
        minilm_teacher: Path, emoji_batch: dict, tmp_path: Path) -> None:
    runs = {}
    for name, accum in (("whole", 1), ("gradcache", 2), ("plain", 1)):
        extra = [] if name == "plain" else [f"teacher={minilm_teacher}"]
        config = debug_config(tmp_path / name, "steps=1", f"accum_steps={accum}", f"batch_size={8 // accum}",
                              *DISTILL_OPTIONS, *extra)
        trainer = Trainer(config, evaluators=(), make_epoch=lambda epoch, parts=accum: split(emoji_batch, parts),
                          dist=Distributed(cpu=True))
        student = copy.deepcopy(trainer.towers)  # before any step
        trainer.run()
        runs[name] = (student, trainer.towers, read_metrics(tmp_path / name / "metrics.jsonl")[0])

    student = runs["whole"][0]
    for name in ("gradcache", "plain"):  # the same init in every run: the teacher does not disturb the seeded draws
        assert all(torch.equal(a, b) for a, b in zip(student.parameters(), runs[name][0].parameters(), strict=True))
    with torch.no_grad():
        out = student(emoji_batch["image"], emoji_batch["text"])
        teacher = Encoder.load(minilm_teacher)  # its own tokenizer on the raw captions
        want_clip = clip_loss(out["image_features"], out["text_features"], out["logit_scale"])
        want = distill_loss(out["image_features"], out["text_features"], teacher.encode_image(emoji_batch["image"]),
                            teacher.encode_text(emoji_batch["caption"]), out["logit_scale"],
                            teacher.model.logit_scale.exp(), temperature=2.0, kl_weight=0.7, feature_weight=0.4)
    assert want["kl"] > 0.01 and want["feature"] > 0.1  # not a degenerate case
    for name in ("whole", "gradcache"):
        row = runs[name][2]
        assert row["loss"] == pytest.approx(float(want_clip + want["loss"]), rel=1e-5), name
        assert row["distill_kl"] == pytest.approx(float(want["kl"]), rel=1e-5), name
        assert row["distill_feature"] == pytest.approx(float(want["feature"]), rel=1e-5), name
    plain = runs["plain"][2]
    assert plain["loss"] == pytest.approx(float(want_clip), rel=1e-5) and "distill_kl" not in plain
    # the distillation gradient reached the student: its first update differs from the plain run's
    after = zip(runs["whole"][1].parameters(), runs["plain"][1].parameters(), strict=True)
    assert max(float((d - p).detach().abs().max()) for d, p in after) > 1e-4


def test_wider_teacher_trains_a_projection_that_resumes_exactly(
        wide_teacher: Path, emoji_shards: Path, tmp_path: Path) -> None:
    options = [f"train_data={emoji_shards}", f"distill.teacher={wide_teacher}", "steps=3", "checkpoint_every=2",
               "deterministic=true", *DISTILL_OPTIONS]
    straight = tmp_path / "straight"
    train(debug_config(straight, *options))
    state = checkpoint.read_train_state(straight / "checkpoints" / "step_00000003")
    projection = state["distill"]["projection"]["weight"]
    assert projection.shape == (384, 256)  # student 256 -> teacher 384
    first = checkpoint.read_train_state(straight / "checkpoints" / "step_00000002")["distill"]["projection"]["weight"]
    assert not torch.equal(first, projection)  # it is trained

    resumed = shutil.copytree(straight, tmp_path / "resumed")
    shutil.rmtree(resumed / "checkpoints" / "step_00000003")
    train(debug_config(resumed, *options, "resume=latest"))
    keys = ("step", "loss", "distill_kl", "distill_feature")
    want = [r[k] for r in read_metrics(straight / "metrics.jsonl") for k in keys]
    got = [r[k] for r in read_metrics(resumed / "metrics.jsonl") for k in keys]
    assert got[::len(keys)] == [1, 2, 3]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-7)
    again = checkpoint.read_train_state(resumed / "checkpoints" / "step_00000003")["distill"]["projection"]["weight"]
    assert torch.allclose(again, projection, atol=1e-7)


@pytest.mark.parametrize("teacher, message", [
    ("missing", "does not exist: pass a run dir or a checkpoint dir"),
    ("empty", "no checkpoint in"),
])
def test_bad_teacher_path_is_one_error_line(teacher: str, message: str, emoji_shards: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    argv = [*PRETRAIN_TINY_DEBUG, "--train-data", str(emoji_shards), "--out", str(tmp_path / "run")]
    line = error_line([*argv, f"distill.teacher={tmp_path / teacher}"], capsys, alone=True)
    assert line.startswith("error: distill.teacher: ") and message in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_batches_without_captions_are_refused(minilm_teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(PretrainError, match="raw captions"):
        train(debug_config(tmp_path, f"teacher={minilm_teacher}", "steps=1"), make_epoch=lambda e: global_batches(2))


def test_overrides_reach_the_distill_group() -> None:
    config = apply_overrides(named_config("tiny"), ["distill.teacher=runs/t", "temperature=3", "feature_weight=0"])
    assert (config.distill.teacher, config.distill.temperature, config.distill.feature_weight) == ("runs/t", 3.0, 0.0)
    assert named_config("tiny").distill.teacher is None
    with pytest.raises(PretrainError, match="distill.temperature"):
        train(apply_overrides(config, ["temperature=0"]))


def test_image_adapter_renormalises_and_resizes_exactly() -> None:
    raw = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    student = {"size": 64, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    teacher = {"size": [32, 32], "mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}

    def normalise(images: torch.Tensor, cfg: dict) -> torch.Tensor:
        return (images - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)

    got = image_adapter(student, teacher)(normalise(raw, student))
    # per-channel affine maps commute with the (linear) resize
    want = torch.nn.functional.interpolate(normalise(raw, teacher), size=(32, 32), mode="bicubic",
                                           align_corners=False, antialias=True)
    assert got.shape == (2, 3, 32, 32) and torch.allclose(got, want, atol=1e-5)
    same = torch.randn(1, 3, 64, 64)
    assert image_adapter(student, dict(student, size=[64, 64]))(same) is same
