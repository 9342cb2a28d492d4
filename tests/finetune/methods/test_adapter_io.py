"""Adapters saved small and loaded back: same logits, checkpoint checked."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from finetune.errors import FinetuneError
from finetune.methods.adapter_io import load_adapter, save_adapter
from finetune.methods.clip_adapter import ClipAdapterConfig, fit_clip_adapter
from finetune.methods.full_finetune import FullFinetuneConfig, encode_images, fit_full_finetune
from finetune.methods.head_training import HeadTrainingConfig
from finetune.methods.linear_probe import fit_linear_probe
from finetune.methods.task import FewShotTask
from finetune.methods.tip_adapter import fit_tip_adapter_f
from finetune.methods.wise_ft import fit_wise_ft
from tests.finetune.fewshot_data import cluster_task, image_task

FAST_ADAPTER = ClipAdapterConfig(ratios=[0.5], training=HeadTrainingConfig(min_steps=10, epochs=1))


def fake_encoder(checkpoint_id: str, visual: torch.nn.Module | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        checkpoint_id=checkpoint_id, model=SimpleNamespace(visual=visual), preprocess=None,
        encode_image=lambda images: F.normalize(visual(images), dim=-1),
    )


@pytest.mark.parametrize(
    "fit",
    [fit_linear_probe, lambda t: fit_clip_adapter(t, FAST_ADAPTER), fit_tip_adapter_f, fit_wise_ft],
    ids=["linear-probe", "clip-adapter", "tip-adapter-f", "wise-ft"],
)
def test_round_trip_gives_the_same_logits(tmp_path: Path, fit) -> None:
    task, eval_x, _ = cluster_task(zeroshot="random")
    fitted = fit(task)
    save_adapter(tmp_path / "run", method="m", fitted=fitted, checkpoint_id="ck1", classnames=task.classnames)
    predictor = load_adapter(tmp_path / "run", fake_encoder("ck1"))
    assert torch.allclose(predictor.logits(eval_x), fitted.head(eval_x).detach(), atol=1e-6)
    assert torch.equal(predictor.predict(eval_x), fitted.head(eval_x).argmax(dim=1))
    assert predictor.classnames == task.classnames
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["checkpoint_id"] == "ck1" and config["method"] == "m"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["adapter.safetensors", "config.json"]


def save_probe(out: Path, task: FewShotTask, checkpoint_id: str) -> None:
    save_adapter(out, method="linear-probe", fitted=fit_linear_probe(task), checkpoint_id=checkpoint_id,
                 classnames=task.classnames)


def test_adapter_is_small(tmp_path: Path) -> None:
    save_probe(tmp_path / "run", cluster_task(zeroshot="random", dim=512, num_classes=10, shots=16)[0], "c")
    assert (tmp_path / "run" / "adapter.safetensors").stat().st_size < 10 * 512 * 4 + 10 * 4 + 1024


def test_tuned_image_tower_round_trip(tmp_path: Path) -> None:
    task, images, eval_im, _ = image_task()
    fitted = fit_full_finetune(task, images, FullFinetuneConfig(min_steps=20, lr=1e-2))
    save_adapter(tmp_path / "ft", method="full-finetune", fitted=fitted, checkpoint_id="ck", classnames=task.classnames)
    predictor = load_adapter(tmp_path / "ft", fake_encoder("ck", images.visual))
    expected = fitted.head(encode_images(fitted.image_tower, eval_im))
    assert torch.allclose(predictor.logits(predictor.encode_image(eval_im)), expected, atol=1e-5)


def test_adapter_for_another_checkpoint_is_refused(tmp_path: Path) -> None:
    save_probe(tmp_path / "run", cluster_task()[0], "aaa")
    with pytest.raises(FinetuneError, match="trained on checkpoint aaa but this checkpoint is bbb"):
        load_adapter(tmp_path / "run", fake_encoder("bbb"))


def test_a_directory_that_is_not_an_adapter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FinetuneError, match="not an adapter directory"):
        load_adapter(tmp_path, fake_encoder("x"))
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "ViT-B-32"}))
    with pytest.raises(FinetuneError, match="not a clipline adapter config"):
        load_adapter(tmp_path, fake_encoder("x"))
