"""`clipline pretrain` user errors: one line on stderr, exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipline.commands.pretrain import main
from tests.clipline.running import error_line

PRETRAIN_TINY_DEBUG = ["pretrain", "--config", "tiny-debug"]


def test_unknown_config_key(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    line = error_line([*PRETRAIN_TINY_DEBUG, "--out", str(tmp_path), "lernrate=1"], capsys, alone=True)
    assert line.startswith("error: unknown config key 'lernrate'; valid keys:") and "optim.lr" in line


def test_empty_shard_dir(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    line = error_line([*PRETRAIN_TINY_DEBUG, "--train-data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")],
                      capsys, alone=True)
    assert line.startswith("error: no .tar shards in")


def test_missing_train_data(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert "--train-data" in error_line([*PRETRAIN_TINY_DEBUG, "--out", str(tmp_path)], capsys)


def test_help_lists_config_keys(capsys: pytest.CaptureFixture) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    assert "--train-data" in out and "optim.lr" in out and "Peak learning rate" in out
