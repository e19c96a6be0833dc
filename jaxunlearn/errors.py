"""One exception family for problems a user can fix.

The CLI prints these without a traceback and exits non-zero; every message says what was
wrong and what to do about it.
"""


class JaxUnlearnError(Exception):
    """Base class: a user-facing error with an actionable message."""


class CheckpointError(JaxUnlearnError):
    """A checkpoint (file, tensor, config field) is missing, malformed or unsupported."""


class ConfigError(JaxUnlearnError):
    """A configuration key or value is invalid."""


class DataError(JaxUnlearnError):
    """A data file or row is missing, malformed or unusable."""


class Interrupted(JaxUnlearnError):
    """A run stopped by SIGINT / SIGTERM after saving its last finished step."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
