"""The one exception type that the command line turns into a one-line message and exit code 2."""


class InputError(Exception):
    """Bad user input (a file, a row, a field, an argument). The message names what was wrong."""
