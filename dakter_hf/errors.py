"""The package's user-facing errors: each message names the file or argument and what was expected.

This module imports nothing of the package, so every layer can raise these.
"""


class DataError(ValueError):
    """Bad input data: the message names the file and what was expected."""


class FolderError(ValueError):
    """A folder that a command may not write, with what is there and what to do."""


class SceneError(ValueError):
    """An upload the Space cannot use; the message is shown in the page as is."""


class RasterError(DataError):
    """An image file the raster reader refuses; `reason` is the message without the file's name."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason

    def __reduce__(self):  # picklable across worker processes despite the two-argument constructor
        return type(self), (self.where, self.reason)


class PixelLimitError(RasterError):
    """An image refused from its size alone: empty, or above `max_pixels` (height and width None when unknown)."""

    def __init__(self, where: str, reason: str, height, width, max_pixels):
        super().__init__(where, reason)
        self.height, self.width, self.max_pixels = height, width, max_pixels

    def __reduce__(self):
        return type(self), (self.where, self.reason, self.height, self.width, self.max_pixels)
