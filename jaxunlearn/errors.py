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
