"""`clipline explain` and `clipline compress`, and the old spellings that still run them for one release.

The old spellings (`clipline finetune fusion heatmap|compress`, `clipline
finetune zeroshot`) do the same work and say once on stderr what the new one is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipline.commands import zeroshot as zeroshot_cli
from tests.clipline.running import error_line, run_ok
from tests.finetune.fakes import ColourEncoder, write_shards
from tests.finetune.fusion_fakes import tiny_checkpoint


def notice_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note:")]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("explain") / "run")


def test_explain_and_its_old_spelling(tiny_run: Path, emoji_shards: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    args = ["--checkpoint", str(tiny_run), "--data", str(emoji_shards), "--count", "2", "--method", "tokens"]
    out, err = run_ok(["explain", *args, "--out", str(tmp_path / "new")], capsys)
    assert "heatmap: wrote" in out and not notice_lines(err)
    old_out, old_err = run_ok(["finetune", "fusion", "heatmap", *args, "--out", str(tmp_path / "old")], capsys)
    assert "heatmap: wrote" in old_out
    assert notice_lines(old_err) == ["note: `clipline finetune fusion heatmap` is now `clipline explain`; "
                                     "the old spelling will be removed in the next release"]
    for folder in ("new", "old"):
        assert (tmp_path / folder / "heatmaps.png").is_file()
    new_maps = json.loads((tmp_path / "new" / "heatmaps.json").read_text())
    assert new_maps == json.loads((tmp_path / "old" / "heatmaps.json").read_text())
    assert len(new_maps["samples"]) == 2 and set(new_maps["mean_object_focus"]) == {"tokens"}


def test_explain_bad_method_is_one_line(tiny_run: Path, emoji_shards: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    line = error_line(["explain", "--checkpoint", str(tiny_run), "--data", str(emoji_shards), "--out", str(tmp_path),
                       "--method", "nonsense"], capsys)
    assert line.startswith("error: unknown --method 'nonsense'")


def test_compress_and_its_old_spelling(tiny_run: Path, emoji_shards: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    args = ["--checkpoint", str(tiny_run), "--data", str(emoji_shards), "--variants", "fp32,bf16",
            "--batch-size", "16", "--speed-images", "16"]
    out, err = run_ok(["compress", *args, "--out", str(tmp_path / "new")], capsys)
    assert "bf16" in out and not notice_lines(err)
    _, old_err = run_ok(["finetune", "fusion", "compress", *args, "--out", str(tmp_path / "old")], capsys)
    assert notice_lines(old_err) == ["note: `clipline finetune fusion compress` is now `clipline compress`; "
                                     "the old spelling will be removed in the next release"]
    for folder in ("new", "old"):
        rows = json.loads((tmp_path / folder / "compress.json").read_text())["variants"]
        assert list(rows) == ["fp32", "bf16"] and rows["fp32"]["n"] == 48


def test_finetune_zeroshot_old_spelling(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    classes = ["cat", "dog", "bird", "fish"]
    data = write_shards(tmp_path / "shards", classes, per_class=3, image_size=16)
    monkeypatch.setattr(zeroshot_cli, "open_encoder", lambda *a: ColourEncoder(classes))
    args = ["--model", "fake", "--data", str(data), "--templates", "imagenet7", "--num-workers", "0"]
    _, err = run_ok(["zeroshot", *args, "--out", str(tmp_path / "new.json")], capsys)
    assert not notice_lines(err)
    _, old_err = run_ok(["finetune", "zeroshot", *args, "--out", str(tmp_path / "old.json")], capsys)
    assert notice_lines(old_err) == ["note: `clipline finetune zeroshot` is now `clipline zeroshot`; "
                                     "the old spelling will be removed in the next release"]
    new, old = (json.loads((tmp_path / name).read_text()) for name in ("new.json", "old.json"))
    assert new["top1"] == old["top1"] == 1.0 and new["n"] == old["n"] == 12
