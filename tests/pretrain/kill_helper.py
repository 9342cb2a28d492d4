"""Train tiny-debug on shards and SIGKILL this process in the middle of a step sequence.

test_train.py runs this in a subprocess. The kill comes from an evaluator
(eval_every=1) on its KILL_AT-th call, i.e. right after step KILL_AT,
after the checkpoint of step 3 and before the next one: the process dies
with unsaved progress, as with `kill -9` or an out-of-memory kill.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

KILL_AT = 5


class SignalAt:
    """An evaluator that sends `signum` to this process on its `at`-th call (test_train.py uses it too)."""

    def __init__(self, signum: int, at: int) -> None:
        self.signum, self.at, self.calls = signum, at, 0

    def run(self, encoder: object) -> Iterator[tuple[str, float]]:
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        yield "signal/calls", float(self.calls)


if __name__ == "__main__":
    from pretrain.config import apply_overrides
    from pretrain.named_configs import named_config
    from pretrain.train import train

    config = apply_overrides(named_config("tiny-debug"), sys.argv[1:] + ["eval_every=1"])
    train(config, evaluators=[SignalAt(signal.SIGKILL, KILL_AT)])
