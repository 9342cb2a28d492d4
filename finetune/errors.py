"""The one exception type a user of finetune can cause."""


class FinetuneError(Exception):
    """Bad input to finetune (bad class file, missing labels, mismatched adapter).

    The message says what was wrong and what to do, naming config fields in backticks (`out`), never
    command-line flags; the CLI prints it on one line, each field spelled as its command takes it.
    """
