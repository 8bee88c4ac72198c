"""Errors the engine raises on purpose; the CLI turns them into one-line messages."""


class InputError(ValueError):
    """Bad user input (image, box, checkpoint, path). The message names the problem in one line."""


class Cancelled(Exception):
    """A step was cancelled by the user; the session is left exactly as before the step."""


class Diverged(InputError):
    """An optimisation produced a non-finite loss; the step is dropped and the session unchanged."""
