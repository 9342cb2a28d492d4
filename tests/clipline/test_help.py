"""Every command answers --help with its usage on stdout and exit status 0; `python -m PACKAGE` reaches the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.methods.experiment import METHODS
from tests.clipline.running import run_clipline

REPO = Path(__file__).resolve().parents[2]
COMMANDS = [
    [], ["data"], ["data", "build"], ["data", "inspect"], ["data", "validate"], ["pretrain"], ["zeroshot"],
    ["finetune"], *[["finetune", method] for method in METHODS], ["finetune", "sweep"], ["finetune", "fusion"],
    ["finetune", "zeroshot"], ["explain"], ["compress"], ["embed"], ["index"], ["index", "build"], ["search"],
    ["serve"], ["eval"], ["eval", "retrieval"],
]


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words) or "clipline")
def test_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_clipline([*words, "--help"], capsys)
    assert code == 0 and out.startswith("usage: "), out
    assert out.split()[1] == "clipline" and (not words or words[-1] in out.splitlines()[0]), out


@pytest.mark.parametrize("old,new", [("heatmap", "explain"), ("compress", "compress")])
def test_old_fusion_spellings_show_the_new_command(old: str, new: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_clipline(["finetune", "fusion", old, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: clipline {new} "), out
    assert err.startswith(f"note: `clipline finetune fusion {old}` is now `clipline {new}`"), err


@pytest.mark.parametrize("package,words", [("pretrain", []), ("data_tools", ["build"]), ("finetune", ["sweep"]),
                                           ("retrieval", ["search"])])
def test_python_m_package_reaches_the_command(package: str, words: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", package, *words, "--help"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: clipline "), done.stdout[:200]
