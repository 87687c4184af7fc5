"""The exception family for expected failures.

Each subclass carries the exit code the CLI uses for it, so a script can tell
a bad config from a bad dataset without parsing messages.
"""


class ImgclfError(Exception):
    """An expected failure whose message names the value at fault and the fix."""

    exit_code = 1


class ConfigError(ImgclfError):
    """A config file, key or value is invalid."""

    exit_code = 3


class DatasetError(ImgclfError):
    """A dataset folder, manifest or split cannot be used as it is."""

    exit_code = 4


class ImageError(ImgclfError):
    """One image file cannot be decoded or is over a limit."""

    exit_code = 5

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


class ModelError(ImgclfError):
    """A saved model or run directory is missing, incomplete or inconsistent."""

    exit_code = 6


class TrainingError(ImgclfError):
    """Training stopped because it cannot produce a usable model."""

    exit_code = 7


class TrainingInterrupted(ImgclfError):
    """Training was stopped by Ctrl-C or SIGTERM after a completed epoch; the run can be resumed."""

    exit_code = 130
