"""The one error printer: a mistake a user can make ends in one `error: ...` line and exit status 2.

Each package raises one exception type for what a user can cause (DESIGN.md);
bad flags raise argparse.ArgumentError from the parser. Commands run inside
`reported_errors`, so no command lists the error types itself. The libraries
name config fields in backticks (`` `batch_size` ``); the line printed spells
each as the command at hand takes it (`--batch-size`, or pretrain's
`data.batch_size` key), from what its parser noted (clipline.flags).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from clipline.flags import noted_spellings, spelled
from data_tools.errors import DataError
from evaluate.errors import EvaluateError
from finetune.errors import FinetuneError
from pretrain.errors import PretrainError
from retrieval.errors import RetrievalError

EXIT_USER_ERROR = 2
USER_ERRORS: tuple[type[Exception], ...] = (DataError, PretrainError, EvaluateError, FinetuneError, RetrievalError)


def fail(message: str) -> NoReturn:
    """Print `message` as one `error:` line on stderr and exit 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


@contextmanager
def reported_errors(command: str) -> Iterator[None]:
    """Turn the package errors and bad flags raised inside into one line; `command` names the --help to read."""
    with noted_spellings() as spellings:
        try:
            yield
        except argparse.ArgumentError as err:
            fail(f"{err or type(err).__name__} (see `clipline {command} --help`)")
        except USER_ERRORS as err:
            fail(spelled(str(err), spellings))
