"""Errors a user can cause. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

from backends.spec import HyperparameterError
from suites.registry import UnknownSuiteError
from suites.spec import DataUnavailableError


class NgbenchError(Exception):
    """Base of user-facing errors raised by the harness."""


class UnknownOptimizerError(NgbenchError):
    pass


class UnknownBackendError(NgbenchError):
    pass


class DatabaseError(NgbenchError):
    """The database is unreachable, or its schema cannot be brought up to date."""


class ConfigError(NgbenchError):
    """A malformed or invalid sweep/config file or command-line value."""


#: Every exception type whose message is meant for the user as is.
USER_ERRORS: tuple[type[BaseException], ...] = (
    NgbenchError,
    HyperparameterError,
    UnknownSuiteError,
    DataUnavailableError,
)
