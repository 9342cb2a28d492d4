"""The one error printer: each package's error type and bad flags end in one `error:` line and exit 2; the
libraries name config fields (`image_size`), the line names the flag the user typed (`--image-size`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clipline.commands.errors import USER_ERRORS, reported_errors
from clipline.commands.pretrain import build_parser
from clipline.flags import spelled
from data_tools.build import BuildConfig, check_build_inputs
from data_tools.errors import DataError
from data_tools.records import SourceData
from finetune.errors import FinetuneError
from pretrain.errors import PretrainError
from retrieval.errors import RetrievalError
from tests.clipline.running import error_line


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
    argv = "finetune linear-probe --checkpoint c --train-data t --eval-data e --out o --method.max-iter many".split()
    line = error_line(argv, capsys, alone=True)
    assert line.startswith("error: --method.max-iter: ") and "many" in line


def test_a_library_error_names_the_field_and_clipline_prints_the_flag(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError) as library:
        check_build_inputs(SourceData(name="none", records=[]), BuildConfig(out=tmp_path / "s", image_size=4))
    assert str(library.value) == "`image_size` must be >= 8 and `shard_size` >= 1" and "--" not in str(library.value)
    line = error_line(["data", "build", "emoji", "--out", str(tmp_path / "s"), "--image-size", "4"], capsys, alone=True)
    assert line == "error: --image-size must be >= 8 and --shard-size >= 1"


def test_pretrain_errors_spell_a_field_as_the_user_set_it(capsys: pytest.CaptureFixture[str]) -> None:
    """A field with a flag of its own prints as the flag; any other as its `key=value` key; a name no field
    has stays as written."""
    with pytest.raises(SystemExit), reported_errors("pretrain"):
        build_parser()
        raise PretrainError("`data.train_data` is empty; `batch_size` too big, lower `data.accum_steps`; `value`")
    assert capsys.readouterr().err == ("error: --train-data is empty; data.batch_size too big, lower "
                                       "data.accum_steps; `value`\n")


def test_field_names_are_spelled_only_where_they_name_one_flag() -> None:
    spellings = {"embed.batch_size": "--batch-size", "out": "--out", "method.lr": "--method.lr", "lr": "--lr"}
    assert spelled("`batch_size` >= 1; fresh `out`; `lr`; `embed.batch_size`", spellings) == \
        "--batch-size >= 1; fresh --out; --lr; --batch-size"
    assert spelled("`training.lr` and `missing` and `clipline data build`", spellings) == \
        "`training.lr` and `missing` and `clipline data build`"
