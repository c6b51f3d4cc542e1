"""Standardized, backend-neutral problems (data, model spec, likelihood, protocol)."""

from suites.registry import UnknownSuiteError, get_suite, list_suites, register
from suites.spec import Budget, Dataset, DataUnavailableError, Suite, Target

__all__ = [
    "Budget",
    "DataUnavailableError",
    "Dataset",
    "Suite",
    "Target",
    "UnknownSuiteError",
    "get_suite",
    "list_suites",
    "register",
]
