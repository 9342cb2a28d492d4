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


def run_new_and_old(new: list[str], old: list[str], args: list[str], out: Path, capsys: pytest.CaptureFixture[str],
                    suffix: str = "") -> tuple[str, str]:
    """`clipline NEW ARGS --out OUT/new` and `clipline OLD ARGS --out OUT/old` (names + `suffix`): their stdout. Only
    the old spelling prints a note, one line naming the new one."""
    new_out, new_err = run_ok([*new, *args, "--out", str(out / f"new{suffix}")], capsys)
    old_out, old_err = run_ok([*old, *args, "--out", str(out / f"old{suffix}")], capsys)
    notes = [line for line in (new_err + old_err).splitlines() if line.startswith("note:")]
    assert notes == [f"note: `clipline {' '.join(old)}` is now `clipline {' '.join(new)}`; "
                     "the old spelling will be removed in the next release"]
    return new_out, old_out


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory: pytest.TempPathFactory, emoji_shards: Path) -> list[str]:
    """`--checkpoint RUN --data SHARDS`: a tiny run and the emoji fixture shards."""
    run = tiny_checkpoint(tmp_path_factory.mktemp("explain") / "run")
    return ["--checkpoint", str(run), "--data", str(emoji_shards)]


def test_explain_and_its_old_spelling(run_and_data: list[str], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    args = [*run_and_data, "--count", "2", "--method", "tokens"]
    out, old_out = run_new_and_old(["explain"], ["finetune", "fusion", "heatmap"], args, tmp_path, capsys)
    assert "heatmap: wrote" in out and "heatmap: wrote" in old_out
    for folder in ("new", "old"):
        assert (tmp_path / folder / "heatmaps.png").is_file()
    new_maps = json.loads((tmp_path / "new" / "heatmaps.json").read_text())
    assert new_maps == json.loads((tmp_path / "old" / "heatmaps.json").read_text())
    assert len(new_maps["samples"]) == 2 and set(new_maps["mean_object_focus"]) == {"tokens"}


def test_explain_bad_method_is_one_line(run_and_data: list[str], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    line = error_line(["explain", *run_and_data, "--out", str(tmp_path), "--method", "nonsense"], capsys)
    assert line.startswith("error: unknown --method 'nonsense'")


def test_compress_and_its_old_spelling(run_and_data: list[str], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    args = [*run_and_data, "--variants", "fp32,bf16", "--batch-size", "16", "--speed-images", "16"]
    out, _ = run_new_and_old(["compress"], ["finetune", "fusion", "compress"], args, tmp_path, capsys)
    assert "bf16" in out
    for folder in ("new", "old"):
        rows = json.loads((tmp_path / folder / "compress.json").read_text())["variants"]
        assert list(rows) == ["fp32", "bf16"] and rows["fp32"]["n"] == 48


def test_finetune_zeroshot_old_spelling(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    classes = ["cat", "dog", "bird", "fish"]
    data = write_shards(tmp_path / "shards", classes, per_class=3, image_size=16)
    monkeypatch.setattr(zeroshot_cli, "open_encoder", lambda *a: ColourEncoder(classes))
    args = ["--model", "fake", "--data", str(data), "--templates", "imagenet7", "--num-workers", "0"]
    run_new_and_old(["zeroshot"], ["finetune", "zeroshot"], args, tmp_path, capsys, suffix=".json")
    new, old = (json.loads((tmp_path / name).read_text()) for name in ("new.json", "old.json"))
    assert new["top1"] == old["top1"] == 1.0 and new["n"] == old["n"] == 12
