"""The one exception type a user of data_tools can cause."""


class DataError(Exception):
    """Bad input to data_tools (missing dir, unknown source, unusable file).

    The message says what was wrong and what to do, naming config fields in backticks (`out`), never
    command-line flags; the CLI prints it on one line, each field spelled as its command takes it.
    """
