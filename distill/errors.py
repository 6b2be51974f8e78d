"""The one error type a user can cause and fix; the CLI prints it as one line, without a traceback."""


class UserError(Exception):
    """Something wrong with the user's input (sweep file, data directory, sizes, cache): say what and how to fix."""
