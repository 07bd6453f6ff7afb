"""The exception types that the command line turns into a one-line message and exit code 2, and the warning type
it prints as one line. They follow Python's (and scikit-learn's) conventions, so `except ValueError` and
`except TypeError` catch them in a notebook."""


class InputError(ValueError):
    """Bad user input (a file, a row, a field, an argument). The message names what was wrong."""


class ArgumentTypeError(InputError, TypeError):
    """An argument of the wrong type (a string where a number or a PatchConfig was due). The message names it."""


class NotDelivered(RuntimeError):
    """Work done and kept, but not all of it reached its destination (a PACS down, refusing or silent): the command
    line prints each line (one per item not delivered) and exits 1; running the command again completes it."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


class InputWarning(UserWarning):
    """Input that is used, with a fallback or a caveat the user should know (a bad optional DICOM tag ignored, the
    first page of a multipage TIFF taken). The message names the file and what was done."""
