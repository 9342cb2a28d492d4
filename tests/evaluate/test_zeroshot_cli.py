"""`clipline zeroshot` end to end: report files, and one-line errors for bad input."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipline.commands import zeroshot as zeroshot_cli
from pretrain.encoder import Encoder
from tests.clipline.running import error_line, run_ok
from tests.finetune.fakes import TINY_MODEL, ColourEncoder, save_tiny_checkpoint, tiny_encoder, write_shards

CLASSES = ["cat", "dog", "bird", "fish"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("run") / "run")


def test_real_checkpoint_on_fixture_shards(tiny_run: Path, emoji_shards: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "reports" / "emoji.json"
    argv = ["--checkpoint", str(tiny_run), "--data", str(emoji_shards), "--out", str(out),
            "--allow-resize", "--num-workers", "0", "--batch-size", "20", "--label-field", "category"]  # fmt: skip
    stdout, _ = run_ok(["zeroshot", *argv], capsys)
    report = json.loads(out.read_text())
    assert {"top1", "top5", "mean_per_class_recall", "macro_f1", "per_class", "n"} <= set(report)
    assert report["n"] == 48
    assert len(report["per_class"]) == 10
    assert sum(row["support"] for row in report["per_class"].values()) == 48
    assert report["templates"]["name"] == "emoji"  # chosen from dataset.json source
    assert "top1" in stdout and str(out) in stdout
    for name in ("confusion", "recall", "embedding"):
        png = out.parent / report["pictures"][name]
        assert png.name == f"emoji_{name}.png"
        with Image.open(png) as image:
            assert image.width > 300 and image.height > 200
    page = (out.parent / "emoji.html").read_text()
    assert report["classes_present"] == 8  # e.g. no "Component" emoji in the fixture: not averaged in as a 0
    assert "Smileys &amp; Emotion" in page and "the 8 of 10 classes present" in page
    # self-contained: every picture embedded, so the page still shows them after it moves alone
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(embedded) == 3 and "emoji_confusion.png" not in page
    assert base64.b64decode(embedded[0]) == (out.parent / "emoji_confusion.png").read_bytes()


def fake_model_report(tmp_path: Path, monkeypatch, capsys, *extra: str) -> dict:  # noqa: ANN001
    """`clipline zeroshot` over ColourEncoder with two classes' colours swapped (top-1 0.5): the JSON written."""
    data = write_shards(tmp_path / "shards", CLASSES, per_class=3, image_size=16)
    monkeypatch.setattr(zeroshot_cli, "open_encoder", lambda *a: ColourEncoder(CLASSES, perm=[1, 0, 2, 3]))
    out = tmp_path / "r.json"
    run_ok(["zeroshot", "--model", "fake", "--data", str(data), "--out", str(out), "--templates", "imagenet7",
            "--num-workers", "0", *extra], capsys)
    return json.loads(out.read_text())


def test_known_answer_through_the_command_line(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    report = fake_model_report(tmp_path, monkeypatch, capsys, "--classes", str(classes),
                               "--report-dir", str(tmp_path / "pics"))
    assert report["top1"] == 0.5
    assert report["templates"]["count"] == 7
    assert (tmp_path / "pics" / "r.html").is_file()
    assert (tmp_path / "pics" / "r_embedding.png").is_file()


def test_open_clip_train_checkpoint_via_model_and_pretrained(emoji_shards: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """A file in open_clip_train's format ("state_dict" with DDP "module." keys) evaluates like our checkpoint."""
    encoder = tiny_encoder(seed=5)
    state = {f"module.{k}": v for k, v in encoder.model.state_dict().items()}
    weights = tmp_path / "epoch_6.pt"
    torch.save({"epoch": 6, "name": "peer", "state_dict": state}, weights)
    torch.manual_seed(0)  # a different random init: only loading the file can make the towers agree
    peer = Encoder.from_open_clip(TINY_MODEL, pretrained=str(weights))
    torch.testing.assert_close(peer.encode_text(["a red heart"]), encoder.encode_text(["a red heart"]))
    run = save_tiny_checkpoint(tmp_path / "run", seed=5)
    common = ["--data", str(emoji_shards), "--allow-resize", "--num-workers", "0", "--label-field", "category"]
    reports = []
    for source in (["--model", TINY_MODEL, "--pretrained", str(weights)], ["--checkpoint", str(run)]):
        out = tmp_path / f"r{len(reports)}.json"
        run_ok(["zeroshot", *source, *common, "--out", str(out)], capsys)
        reports.append(json.loads(out.read_text()))
    assert reports[0]["confusion"] == reports[1]["confusion"]
    assert reports[0]["top1"] == reports[1]["top1"]


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, tiny_run: Path, capsys) -> None:  # noqa: ANN001
    labelled = write_shards(tmp_path / "labelled", CLASSES, per_class=2, image_size=16)
    unlabelled = write_shards(tmp_path / "plain", CLASSES, per_class=2, image_size=16, label="none")
    big = write_shards(tmp_path / "big", CLASSES, per_class=2, image_size=24)
    dupes = tmp_path / "dupes.txt"
    dupes.write_text("cat\ndog\ncat\n")
    blanks = tmp_path / "blanks.txt"
    blanks.write_text("cat\n\ndog\n")
    no_weights = tmp_path / "empty_run"
    no_weights.mkdir()
    run, out = str(tiny_run), str(tmp_path / "r.json")
    cases = {
        "duplicate classes": (["--checkpoint", run, "--data", str(labelled), "--classes", str(dupes), "--out", out],
                              "lists 'cat' twice"),
        "empty class name": (["--checkpoint", run, "--data", str(labelled), "--classes", str(blanks), "--out", out],
                             "empty class name at entry 2"),
        "no weights": (["--checkpoint", str(no_weights), "--data", str(labelled), "--out", out], "no checkpoint in"),
        "no labels": (["--checkpoint", run, "--data", str(unlabelled), "--classes", str(tmp_path / "none.txt"), "--out", out],
                      "does not exist"),
        "unlabelled shards": (["--checkpoint", run, "--data", str(unlabelled), "--out", out, "--num-workers", "0"],
                              "no class label"),
        "image size": (["--checkpoint", run, "--data", str(big), "--out", out], "are 24 px .* expects 16 px"),
        "no model": (["--data", str(labelled), "--out", out], "exactly one of --checkpoint"),
        "bad templates": (["--checkpoint", run, "--data", str(labelled), "--templates", "nope", "--out", out],
                          "neither a built-in set"),
        "no shards": (["--checkpoint", run, "--data", str(tmp_path / "missing"), "--out", out], "does not exist"),
        "unknown flag": (["--checkpoint", run, "--data", str(labelled), "--out", out, "--bogus", "1"], "bogus"),
    }  # fmt: skip
    for case, (argv, expected) in cases.items():
        line = error_line(["zeroshot", *argv], capsys)
        assert re.search(expected, line), (case, line)
    assert not (tmp_path / "r.json").exists()


def test_clip_benchmark_format(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    layout = fake_model_report(tmp_path, monkeypatch, capsys, "--format", "clip_benchmark")
    assert layout["task"] == "zeroshot_classification" and layout["model"] == "fake" and layout["language"] == "en"
    assert layout["metrics"]["acc1"] == 0.5 and set(layout["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert not (tmp_path / "r.html").exists()
