"""Errors a user sees: each message says what went wrong and what to do about it."""


class KgpuError(Exception):
    """Base for every error kgpu reports to a user as one line and a non-zero exit."""

    exit_code = 1


class ConfigError(KgpuError):
    """A file or flag a user gave is invalid. The message names the file, field, value and what is allowed."""

    exit_code = 2


class BackendError(KgpuError):
    """The GPU backend could not be opened or answered with an error."""
