"""`clipline pretrain` user errors: one line on stderr, exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipline.commands.pretrain import main


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_unknown_config_key(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, err = run_main(["--config", "tiny-debug", "--out", str(tmp_path), "lernrate=1"], capsys)
    assert code == 2 and err.startswith("error: unknown config key 'lernrate'; valid keys:")
    assert err.count("\n") == 1 and "optim.lr" in err


def test_empty_shard_dir(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, err = run_main(["--config", "tiny-debug", "--train-data", str(tmp_path / "empty"),
                          "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err.startswith("error: no .tar shards in") and err.count("\n") == 1


def test_missing_train_data(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, err = run_main(["--config", "tiny-debug", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--train-data" in err


def test_help_lists_config_keys(capsys: pytest.CaptureFixture) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    assert "--train-data" in out and "optim.lr" in out and "Peak learning rate" in out
