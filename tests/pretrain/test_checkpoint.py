"""Checkpoint files, open_clip interoperability, and the Encoder."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

from data_tools.atomic_write import _host_tag
from pretrain import checkpoint, models
from pretrain.encoder import Encoder
from pretrain.errors import PretrainError
from tests.data_tools.test_atomic_write import dead_pid


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[models.TwoTower, Path]:
    torch.manual_seed(3)
    towers = models.build_model("clip-tiny-64").eval()
    run = tmp_path_factory.mktemp("run")
    info = models.model_info(towers.name, towers.clip)
    for step in (5, 12):
        checkpoint.save_checkpoint(run, step=step, state_dict=towers.clip.state_dict(), model_info=info,
                                   train_state={"step": step})
    return towers, run


def test_checkpoint_dir_holds_the_three_files(saved: tuple) -> None:
    _, run = saved
    ckpt = run / "checkpoints" / "step_00000012"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "train_state.pt"]
    assert checkpoint.read_model_info(ckpt)["preprocess"]["size"] == [64, 64]
    assert checkpoint.read_train_state(ckpt)["step"] == 12


def test_find_latest_takes_the_highest_step_and_ignores_partial_dirs(saved: tuple) -> None:
    _, run = saved
    (run / "checkpoints" / ".step_00000099.tmp-1a2b3c4d").mkdir()  # a save killed before its rename
    (run / "checkpoints" / "step_00000050").mkdir()  # a directory without weights
    assert checkpoint.find_latest(run).name == "step_00000012"


def test_weights_load_with_open_clip_create_model(saved: tuple) -> None:
    towers, run = saved
    weights = run / "checkpoints" / "step_00000012" / "model.safetensors"
    plain = open_clip.create_model("clip-tiny-64", pretrained=str(weights)).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain.encode_image(images), towers.clip.encode_image(images), atol=1e-6)


def test_keep_last_prunes_older_checkpoints(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        checkpoint.save_checkpoint(tmp_path, step=step, state_dict={"w": torch.ones(2)}, model_info={}, keep_last=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]


def test_train_state_with_aliased_tensors_saves_and_reloads_equal(tmp_path: Path) -> None:
    # torch.save alone refuses one memory block seen as two dtypes; the train state is saved from copies
    steps = torch.arange(4, dtype=torch.float32)
    state = {"optimizer": {"state": {0: {"step": steps, "bits": steps.view(torch.int32)}}}, "rng": (steps[1:],)}
    with pytest.raises(RuntimeError, match="different types"):
        torch.save(state, tmp_path / "plain.pt")
    ckpt = checkpoint.save_checkpoint(tmp_path, step=1, state_dict={"w": torch.ones(2)}, model_info={},
                                      train_state=state)
    loaded = checkpoint.read_train_state(ckpt)
    assert torch.equal(loaded["optimizer"]["state"][0]["bits"], steps.view(torch.int32))
    assert torch.equal(loaded["rng"][0], steps[1:]) and isinstance(loaded["rng"], tuple)


def test_encoder_load_matches_the_trained_model(saved: tuple) -> None:
    towers, run = saved
    encoder = Encoder.load(run)
    images = torch.randn(3, 3, 64, 64)
    expected = torch.nn.functional.normalize(towers.clip.encode_image(images), dim=-1)
    assert torch.allclose(encoder.encode_image(images), expected, atol=1e-6)
    texts = encoder.encode_text(["a red heart", "grinning face"])
    assert texts.shape == (2, 256) and texts.dtype == torch.float32
    assert torch.allclose(texts.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert encoder.image_size == 64 and encoder.embed_dim == 256
    assert encoder.checkpoint_id == checkpoint.file_digest(run / "checkpoints" / "step_00000012" / "model.safetensors")
    assert encoder.preprocess(__import__("PIL.Image").Image.new("RGB", (80, 80))).shape == (3, 64, 64)


def test_encoder_load_without_weights_is_a_pretrain_error(tmp_path: Path) -> None:
    with pytest.raises(PretrainError, match="no checkpoint"):
        Encoder.load(tmp_path)
    with pytest.raises(PretrainError, match="does not exist"):
        Encoder.load(tmp_path / "missing")


def test_encoder_from_open_clip_reads_an_open_clip_train_file(saved: tuple, tmp_path: Path) -> None:
    towers, _ = saved
    # open_clip_train's format: a dict with 'state_dict' whose keys carry DDP's 'module.' prefix
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "x", "state_dict": {f"module.{k}": v for k, v in towers.clip.state_dict().items()}},
               path)
    encoder = Encoder.from_open_clip("clip-tiny-64", pretrained=str(path))
    images = torch.randn(2, 3, 64, 64)
    expected = torch.nn.functional.normalize(towers.clip.encode_image(images), dim=-1)
    assert torch.allclose(encoder.encode_image(images), expected, atol=1e-6)


def test_a_killed_save_is_cleared_by_the_next_and_never_loaded(tmp_path: Path) -> None:
    killed = tmp_path / "checkpoints" / f".step_00000005.tmp-{_host_tag()}-{dead_pid()}-ab12cd"
    killed.mkdir(parents=True)
    (killed / "model.safetensors").write_bytes(b"half")
    (killed / "config.json").write_text("{}")
    with pytest.raises(PretrainError, match="unfinished checkpoint"):
        Encoder.load(killed)
    checkpoint.save_checkpoint(tmp_path, step=6, state_dict={"w": torch.ones(2)}, model_info={})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000006"]
