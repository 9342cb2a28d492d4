"""The one exception type a user of pretrain can cause."""


class PretrainError(Exception):
    """Bad input to pretrain (unknown config key, missing checkpoint, empty shards).

    The message says what was wrong and what to do, naming config fields in backticks (`out`), never
    command-line flags; the CLI prints it on one line, each field spelled as its command takes it.
    """
