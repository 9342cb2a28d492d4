"""`clipline eval retrieval` end to end and its one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

from clipline.commands import eval as eval_cli
from tests.clipline.running import error_line, run_ok
from tests.finetune.fakes import ColourEncoder, save_tiny_checkpoint, write_shards


def test_real_checkpoint_on_fixture_shards(emoji_shards: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    run = save_tiny_checkpoint(tmp_path / "run")
    out = tmp_path / "retrieval.json"
    argv = ["retrieval", "--checkpoint", str(run), "--data", str(emoji_shards), "--out", str(out),
            "--allow-resize", "--num-workers", "0"]  # fmt: skip
    stdout, _ = run_ok(["eval", *argv], capsys)
    report = json.loads(out.read_text())
    for direction in ("image_to_text", "text_to_image"):
        for k in (1, 5, 10):
            assert 0.0 <= report[f"{direction}_R@{k}"] <= 1.0
        assert report[f"{direction}_R@1"] <= report[f"{direction}_R@5"] <= report[f"{direction}_R@10"]
    assert report["n"] == 48
    assert report["images_per_text"] > 1.0  # google and twitter drawings share captions
    assert "R@1" in stdout
    page = (tmp_path / "retrieval.html").read_text()  # the HTML page beside it, pictures embedded
    assert report["pictures"] == {"recall": "retrieval_recall.png", "html": "retrieval.html"}
    assert page.count("src='data:image/png;base64,") == 1 and ".png'" not in page
    assert f"{100 * report['image_to_text_R@5']:.1f}%" in page and f"{100 * report['text_to_image_R@10']:.1f}%" in page


def fake_model_report(tmp_path: Path, monkeypatch, capsys, *extra: str) -> dict:  # noqa: ANN001
    """`clipline eval retrieval` over ColourEncoder on 2 images of each of 3 captioned classes: the JSON written."""
    data = write_shards(tmp_path / "shards", ["cat", "dog", "bird"], per_class=2, image_size=16, captions=True)
    monkeypatch.setattr(eval_cli, "open_encoder", lambda *a: ColourEncoder(["cat", "dog", "bird"]))
    out = tmp_path / "r.json"
    run_ok(["eval", "retrieval", "--model", "fake", "--data", str(data), "--out", str(out), "--captions", "first",
            "--num-workers", "0", *extra], capsys)
    return json.loads(out.read_text())


def test_known_answer_and_caption_choice(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    report = fake_model_report(tmp_path, monkeypatch, capsys)
    assert report["image_to_text_R@1"] == 1.0 and report["text_to_image_R@1"] == 1.0
    assert report["n_texts"] == 3


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    run = save_tiny_checkpoint(tmp_path / "run")
    data = write_shards(tmp_path / "shards", ["cat", "dog"], per_class=2, image_size=32)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "r.json")
    cases = {
        "no weights": (["retrieval", "--checkpoint", str(empty), "--data", str(data), "--out", out], "no checkpoint in"),
        "image size": (["retrieval", "--checkpoint", str(run), "--data", str(data), "--out", out], "are 32 px .* 16 px"),
        "both sources": (["retrieval", "--checkpoint", str(run), "--model", "RN50", "--data", str(data), "--out", out],
                         "exactly one of"),
        "no suite": ([], "suite"),
        "bad captions": (["retrieval", "--checkpoint", str(run), "--data", str(data), "--out", out, "--captions", "x"],
                         "captions"),
    }  # fmt: skip
    for case, (argv, expected) in cases.items():
        line = error_line(["eval", *argv], capsys)
        assert re.search(expected, line), (case, line)
    assert not Path(out).exists()


def test_clip_benchmark_format(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    layout = fake_model_report(tmp_path, monkeypatch, capsys, "--format", "clip_benchmark")
    assert set(layout) == {"dataset", "model", "pretrained", "task", "metrics", "language"}
    assert layout["task"] == "zeroshot_retrieval" and layout["model"] == "fake"
    # two images per caption: each is its own query matching only its own image, and the fake encoder gives
    # both images one embedding, a tie that counts against the query; ours merges the caption and finds all
    metrics = layout["metrics"]
    assert metrics["image_retrieval_recall@1"] == metrics["text_retrieval_recall@1"] == 0.0
    assert metrics["image_retrieval_recall@5"] == metrics["text_retrieval_recall@5"] == 1.0  # the tie is at rank 2
    assert not (tmp_path / "r.html").exists()
