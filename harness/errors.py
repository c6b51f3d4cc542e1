"""Errors a user can cause. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

from backends.spec import HyperparameterError
from db.errors import DatabaseError
from leaderboard.errors import SiteError
from suites.registry import UnknownSuiteError
from suites.spec import DataUnavailableError

__all__ = [
    "USER_ERRORS",
    "ConfigError",
    "DatabaseError",
    "NgbenchError",
    "SiteError",
    "UnknownBackendError",
    "UnknownOptimizerError",
]


class NgbenchError(Exception):
    """Base of user-facing errors raised by the harness."""


class UnknownOptimizerError(NgbenchError):
    pass


class UnknownBackendError(NgbenchError):
    pass


class ConfigError(NgbenchError):
    """A malformed or invalid sweep/config file or command-line value."""


#: Every exception type whose message is meant for the user as is.
USER_ERRORS: tuple[type[BaseException], ...] = (
    NgbenchError,
    DatabaseError,
    SiteError,
    HyperparameterError,
    UnknownSuiteError,
    DataUnavailableError,
)
