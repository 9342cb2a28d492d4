"""The one exception type a user of evaluate can cause."""


class EvaluateError(Exception):
    """Bad input to an evaluation (bad class or template file, unlabelled shards, no readable sample).

    The message says what was wrong and what to do, naming config fields in backticks (`out`), never
    command-line flags; the CLI prints it on one line, each field spelled as its command takes it.
    """
