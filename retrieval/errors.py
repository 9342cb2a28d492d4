"""The one exception type a user of retrieval can cause."""


class RetrievalError(Exception):
    """Bad input to retrieval (empty embedding dir, corrupt index, bad query).

    The message says what was wrong and what to do, naming config fields in backticks (`out`), never
    command-line flags; the CLI prints it on one line, each field spelled as its command takes it.
    """
