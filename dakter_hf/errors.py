"""The package's user-facing errors: each message names the file or argument and what was expected.

This module imports nothing of the package, so every layer can raise these.
"""


class DataError(ValueError):
    """Bad input data: the message names the file and what was expected."""


class FolderError(ValueError):
    """A folder that a command may not write, with what is there and what to do."""


class SceneError(ValueError):
    """An upload the Space cannot use; the message is shown in the page as is."""
