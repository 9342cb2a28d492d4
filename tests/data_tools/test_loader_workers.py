"""Loader worker count when the caller does not choose one."""

from __future__ import annotations

import pytest

from data_tools.loader_workers import auto_loader_workers


@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 0), (4, 2), (16, 2)])
def test_auto_workers_avoid_extra_processes_on_small_machines(monkeypatch, cores: int, expected: int) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert auto_loader_workers(None) == expected
    assert auto_loader_workers(3) == 3 and auto_loader_workers(0) == 0  # an explicit request always wins
