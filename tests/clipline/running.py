"""Run the `clipline` console script inside the test process, as a user would from a shell."""

from __future__ import annotations

import pytest

from clipline.cli import main


def run_clipline(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`clipline ARGV...`: (exit status, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_ok(argv: list[str], capsys: pytest.CaptureFixture[str] | None = None) -> tuple[str, str]:
    """`clipline ARGV...`, which must succeed: (stdout, stderr) when `capsys` captures them, else ("", "")."""
    try:
        main(argv)
    except SystemExit as exit_:
        assert not exit_.code, f"clipline {' '.join(argv)} exited {exit_.code}"
    captured = capsys.readouterr() if capsys is not None else None
    return (captured.out, captured.err) if captured is not None else ("", "")


def error_line(argv: list[str], capsys: pytest.CaptureFixture[str], *, alone: bool = False) -> str:
    """The one `error:` line `clipline ARGV...` prints before exiting 2 (checked: one line, no traceback; with
    `alone`, nothing else on stderr either)."""
    code, _, err = run_clipline(argv, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not alone or err == lines[0] + "\n", err
    return lines[0]
