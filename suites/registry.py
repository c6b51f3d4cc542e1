"""The suite registry: every standardized problem by name.

Suite modules call :func:`register` at import; :func:`get_suite` imports the catalogue on first
use. Names are unique; registering a name twice is a programming error.
"""

from __future__ import annotations

import difflib
import importlib

from suites.spec import Suite

#: Modules holding the catalogue, imported on first lookup.
CATALOGUE_MODULES: tuple[str, ...] = (
    "suites.tiny",
    "suites.digits",
    "suites.diabetes",
    "suites.rosenbrock",
    "suites.breast_cancer",
    "suites.concrete",
    "suites.mnist1d",
    "suites.minilm",
    "suites.fashion_mnist",
    "suites.cifar",
    "suites.heldout",
)

_SUITES: dict[str, Suite] = {}
_loaded = False


class UnknownSuiteError(KeyError):
    """Raised for a suite name that is not registered; the message suggests close names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register(suite: Suite) -> Suite:
    if suite.name in _SUITES and _SUITES[suite.name] is not suite:
        raise ValueError(f"suite {suite.name!r} registered twice")
    _SUITES[suite.name] = suite
    return suite


def _load_catalogue() -> None:
    global _loaded
    if not _loaded:
        for module in CATALOGUE_MODULES:
            importlib.import_module(module)
        _loaded = True


def get_suite(name: str) -> Suite:
    _load_catalogue()
    try:
        return _SUITES[name]
    except KeyError:
        close = difflib.get_close_matches(name, _SUITES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownSuiteError(f"unknown suite {name!r}{hint} (known: {', '.join(sorted(_SUITES))})") from None


def list_suites(size: str | None = None) -> list[Suite]:
    """Registered suites in name order, optionally only one size (``test``, ``ci``, ``gpu``, ``heldout``)."""
    _load_catalogue()
    return [s for _, s in sorted(_SUITES.items()) if size is None or s.size == size]
