"""The one error printer: each package's error type and bad flags end in one `error:` line and exit 2."""

from __future__ import annotations

import argparse

import pytest

from clipline.commands.errors import USER_ERRORS, reported_errors
from data_tools.errors import DataError
from finetune.errors import FinetuneError
from pretrain.errors import PretrainError
from retrieval.errors import RetrievalError


@pytest.mark.parametrize("error_type", [DataError, PretrainError, FinetuneError, RetrievalError])
def test_each_package_error_is_one_line_and_exit_2(error_type: type[Exception],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info, reported_errors("data build"):
        raise error_type("shard 00003.tar is truncated;\n  rebuild it with --overwrite")
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: shard 00003.tar is truncated; rebuild it with --overwrite\n"


def test_bad_flags_name_the_command_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info, reported_errors("index build"):
        raise argparse.ArgumentError(None, "unrecognized arguments: --bogus")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: unrecognized arguments: --bogus (see `clipline index build --help`)\n"


def test_other_errors_are_not_swallowed() -> None:
    assert all(issubclass(t, Exception) for t in USER_ERRORS)
    with pytest.raises(ZeroDivisionError), reported_errors("search"):
        raise ZeroDivisionError  # a bug is a traceback, not a user error


def test_a_wrong_flag_value_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from clipline.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "linear-probe", "--checkpoint", "c", "--train-data", "t", "--eval-data", "e",
              "--out", "o", "--method.max-iter", "many"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: --method.max-iter: ") and "many" in err
