"""The one project exception. The CLI edge turns it into a one-line message, a hint and an exit code."""

from __future__ import annotations


class KheopsError(Exception):
    """A failure the user can act on.

    ``message`` is one line saying what is wrong; ``hint`` says how to fix it; ``exit_code`` is what the
    process returns (1 for failures, 2 for bad input / usage, as in most CLIs).
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(KheopsError):
    """Invalid settings: reported with the key path, before anything is written."""

    exit_code = 2


class DockerUnavailable(KheopsError):
    exit_code = 3


class UsageError(KheopsError):
    """The command line asks for something impossible (exit 2, like click's own usage errors)."""

    exit_code = 2
