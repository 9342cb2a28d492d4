"""`clipline data ...`: real commands, one-line errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.clipline.running import error_line, run_clipline
from tests.data_tools.conftest import COLOURS, FIXTURE_SHARDS, write_image


@pytest.mark.parametrize("argv", [
    ["build", "imagenet", "--out", "/tmp/never"], ["build", "folder:/no/such/dir", "--out", "/tmp/never"],
    ["inspect", "/no/such/dir"], ["validate", "/no/such/dir"],
    ["build", "emoji", "--out", "/tmp/never", "--image-size", "big"], ["build", "emoji"], ["frobnicate"]])
def test_bad_arguments_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    error_line(["data", *argv], capsys, alone=True)
    assert not Path("/tmp/never").exists()


def test_build_inspect_validate_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name, colour in COLOURS.items():
        write_image(tmp_path / "in" / name / "x.png", colour)
    out = tmp_path / "shards"
    code, stdout, _ = run_clipline(["data", "build", f"folder:{tmp_path / 'in'}", "--out", str(out),
                                    "--image-size", "32", "--shard-size", "2", "--workers", "1", "--no-progress"], capsys)
    assert code == 0 and json.loads(stdout)["num_samples"] == 3
    grid = tmp_path / "grid.png"
    code, stdout, _ = run_clipline(["data", "inspect", str(out), "--grid", str(grid), "--json"], capsys)
    report = json.loads(stdout)
    assert code == 0 and report["shards"] == {"00000.tar": 2, "00001.tar": 1}
    assert report["histograms"]["label"] == {"blue": 1, "green": 1, "red": 1}
    assert report["image_sizes"] == {"32x32": 3} and report["caption_words"]["min"] == 5
    assert Image.open(grid).size[0] == 3 * 132
    code, stdout, _ = run_clipline(["data", "inspect", str(out)], capsys)
    assert "3 samples in 2 shards" in stdout
    code, stdout, _ = run_clipline(["data", "validate", str(out), "--out", str(tmp_path / "v.json")], capsys)
    assert code == 0 and stdout.strip().endswith("OK")
    (out / "00001.tar").write_bytes(b"")
    code, stdout, _ = run_clipline(["data", "validate", str(out), "--json"], capsys)
    assert code == 1 and json.loads(stdout)["problems_by_reason"] == {"corrupt_tar": 1, "missing_samples": 1}


def test_fixture_validates_and_help_documents_exit_codes(capsys: pytest.CaptureFixture) -> None:
    code, stdout, _ = run_clipline(["data", "validate", str(FIXTURE_SHARDS)], capsys)
    assert code == 0 and "48 good samples" in stdout
    code, stdout, _ = run_clipline(["data", "validate", "--help"], capsys)
    assert code == 0 and "1 if any problem" in " ".join(stdout.split())
