"""SIGINT/SIGTERM ask the loop to stop after the current step (it then saves a checkpoint)."""

from __future__ import annotations

import contextlib
import signal
from types import FrameType


class StopSignals:
    """Context manager: records the first SIGINT/SIGTERM; a second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # impatient second signal: default behaviour
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.received = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: signals cannot be caught here
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
