"""Fusion runs end to end on tiny real shards: what each modality can know, reports, saving, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from data_tools.loader import LoaderConfig
from finetune.errors import FinetuneError
from finetune.fusion.config import FusionConfig
from finetune.fusion.data import LabelledBatches, parse_tasks, resolve_label_spaces
from finetune.fusion.run import train_fusion
from finetune.fusion.store import load_fusion
from finetune.fusion.train import drop_modalities
from finetune.train_eval_paths import TrainEvalPathsConfig
from pretrain.encoder import Encoder
from tests.clipline.running import error_line
from tests.finetune.fusion_fakes import tiny_checkpoint, write_two_task_shards


QUICK = FusionConfig(tasks="colour,word", epochs=25, hidden=128, batch_size=32, val_fraction=0.2, lr=1e-2,
                     modality_dropout=0.3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fusion")
    paths = TrainEvalPathsConfig(
        checkpoint=str(tiny_checkpoint(root / "ckpt")),
        train_data=str(write_two_task_shards(root / "train", per_class=6, seed=0)),
        eval_data=str(write_two_task_shards(root / "eval", per_class=2, seed=1)),
    )
    return {"paths": paths, "root": root}


def _run(paths: TrainEvalPathsConfig, out: Path, **overrides: Any) -> dict[str, Any]:
    """A quick two-task fusion run into `out` with `overrides` of QUICK's settings; its report."""
    return train_fusion(paths, out=str(out), config=replace(QUICK, **overrides), log=lambda _: None)


def test_each_modality_knows_only_its_own_task(setup: dict[str, Any]) -> None:
    """colour is drawn in the image, the word is in the caption: fusion gets both, one modality one."""
    report = _run(setup["paths"], setup["root"] / "concat", fusion="concat")
    top1 = {c: {t: r["top1"] for t, r in tasks.items()} for c, tasks in report["summary"].items()}
    assert top1["both"]["colour"] >= 0.9 and top1["both"]["word"] >= 0.9
    assert top1["image_only"]["colour"] >= 0.85 and top1["image_only"]["word"] <= 0.5
    assert top1["text_only"]["word"] >= 0.9 and top1["text_only"]["colour"] <= 0.5
    assert report["n"] == 32 and report["train_samples"] + report["val_samples"] == 96
    colour = report["tasks"]["colour"]
    assert sum(map(sum, colour["confusion"])) == 32 and set(colour["per_class"]) == {"red", "green", "blue", "yellow"}
    run = setup["root"] / "concat"
    for name in ("report.json", "metrics.jsonl", "curves.png", "confusion_colour.png", "confusion_word.png",
                 "per_class_recall_word.png", "fusion.safetensors", "fusion.json", "config.json"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 25 and rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_gated_run_saves_reloads_and_reports_gates(setup: dict[str, Any]) -> None:
    out = setup["root"] / "gated"
    report = _run(setup["paths"], out, fusion="gated", epochs=3, task_weighting="uncertainty")
    gates = report["gate_mean_image_share"]
    assert gates["image_only"] == 1.0 and gates["text_only"] == 0.0 and 0.0 < gates["both"] < 1.0
    assert set(report["task_weights"]) == {"colour", "word"}
    model, encoder = load_fusion(out)
    images = torch.randn(3, 3, 64, 64)
    text = encoder.tokenizer(["north thing", "west thing", "east thing"])
    logits = model(images, text)["logits"]["word"]
    model_again, _ = load_fusion(out)
    torch.testing.assert_close(model_again(images, text)["logits"]["word"], logits)


def test_partially_unfrozen_towers_train_and_are_saved(setup: dict[str, Any]) -> None:
    out = setup["root"] / "last"
    before = {n: p.clone() for n, p in Encoder.load(setup["paths"].checkpoint).model.named_parameters()}
    _run(setup["paths"], out, fusion="attention", towers="last", unfrozen_blocks=1, epochs=2, tower_lr=1e-3,
         attention_heads=2)
    model, _ = load_fusion(out)
    after = dict(model.towers.named_parameters())
    last, first = (f"visual.transformer.resblocks.{i}.mlp.c_fc.weight" for i in (1, 0))
    assert not torch.equal(after[last], before[last])
    assert torch.equal(after[first], before[first])


def test_samples_missing_a_label_are_skipped_and_counted(setup: dict[str, Any]) -> None:
    train = write_two_task_shards(setup["root"] / "gappy", per_class=2, seed=3, drop_word_every=4)
    gappy = replace(setup["paths"], train_data=str(train))
    report = _run(gappy, setup["root"] / "gappy_run", epochs=1, val_fraction=0.0)
    assert report["train_skipped"] == {"missing label 'word'": 8}  # samples 0, 4, ..., 28 of 32
    assert report["train_samples"] == 24
    only_colour = _run(gappy, setup["root"] / "colour_run", tasks="colour", epochs=1, val_fraction=0.0)
    assert only_colour["train_samples"] == 32 and only_colour["train_skipped"] == {}


def test_bad_input_is_one_line_and_exit_2(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    paths = setup["paths"]
    common = ["--checkpoint", paths.checkpoint, "--train-data", paths.train_data, "--eval-data", paths.eval_data,
              "--out", str(setup["root"] / "bad")]
    cases = [
        (["--tasks", "colour,shape"], "task 'shape' is not a label field of"),
        (["--tasks", "colour", "--fusion", "nonsense"], "fusion"),
        (["--tasks", "colour", "--task-weights", "[1, 2]"], "2 task weights given for 1 tasks"),
        (["--tasks", "colour", "--modality-dropout", "1.5"], "modality_dropout must be in [0, 1]"),
    ]
    for extra, message in cases:
        line = error_line(["finetune", "fusion", *common, *extra], capsys, alone=True)
        assert message in line, line


def test_all_labels_missing_is_an_error(setup: dict[str, Any], tmp_path: Path) -> None:
    shards = write_two_task_shards(tmp_path / "nowords", per_class=1, seed=0, drop_word_every=1)
    with pytest.raises(FinetuneError, match=r"no usable sample for tasks colour, word .* 16 missing label 'word'"):
        _run(replace(setup["paths"], train_data=str(shards), eval_data=str(shards)), tmp_path / "run", epochs=1,
             val_fraction=0.0)


def test_tasks_and_label_spaces(setup: dict[str, Any], emoji_shards: Path) -> None:
    assert parse_tasks("category, subcategory,category") == ["category", "subcategory"]
    spaces = resolve_label_spaces(emoji_shards, ["category", "subcategory"])
    assert len(spaces["category"]) == 10 and "face-smiling" in spaces["subcategory"]
    with pytest.raises(FinetuneError, match="no task given"):
        parse_tasks(" , ")


def test_modality_dropout_drops_one_modality_at_the_asked_rate() -> None:
    image, text = drop_modalities(20_000, 0.3, torch.Generator().manual_seed(0))
    assert not (~image & ~text).any()  # never both
    assert abs((~image | ~text).float().mean().item() - 0.3) < 0.015
    assert abs((~image).float().mean().item() - 0.15) < 0.01


def test_heads_can_share_one_pass_of_the_frozen_towers(setup: dict[str, Any]) -> None:
    shared: dict = {}
    logs: dict[str, list[str]] = {"attention": [], "gated": []}
    reports = {}
    for fusion in logs:
        config = replace(QUICK, fusion=fusion, epochs=1, attention_heads=2)
        reports[fusion] = train_fusion(setup["paths"], out=str(setup["root"] / f"shared_{fusion}"), config=config,
                                       log=logs[fusion].append, shared_cache=shared)
    assert sum("running the frozen towers" in line for line in logs["attention"]) == 2  # train and eval shards
    assert not any("running the frozen towers" in line for line in logs["gated"])
    assert reports["gated"]["train_samples"] == reports["attention"]["train_samples"] > 0


def test_validation_split_by_caption_keeps_a_concept_on_one_side(emoji_shards: Path) -> None:
    def captions(split: str, val_by: str) -> list[str]:
        batches = LabelledBatches(emoji_shards, LoaderConfig(batch_size=16, num_workers=0),
                                  classes=resolve_label_spaces(emoji_shards, ["category"]),
                                  image_transform=lambda image: torch.zeros(1),
                                  tokenize=lambda texts: torch.zeros(len(texts), 1),
                                  split=split, val_fraction=0.3, val_by=val_by)
        return [c for batch in batches for c in batch["caption"]]

    train, val = captions("train", "caption"), captions("val", "caption")
    assert len(train) + len(val) == 48 and val and not set(train) & set(val)
    assert len(set(train + val)) < 48  # the fixture holds concepts drawn by both vendors: the check has teeth
    assert len(captions("train", "key")) + len(captions("val", "key")) == 48
