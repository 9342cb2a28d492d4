"""The one exception type a user of pretrain can cause."""


class PretrainError(Exception):
    """Bad input to pretrain (unknown config key, missing checkpoint, empty shards).

    The message says what was wrong and what to do; the CLI prints it on one line.
    """
