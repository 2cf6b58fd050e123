"""The one exception type a user can cause; the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """Bad input from the user: a file, a column, a row, a flag or a config key.

    The message must name the thing that is wrong and say what was expected
    and what was found. The CLI prints it without a traceback.
    """
