"""A pytest plug-in (loaded by ``conftest.py``) that keeps CI honest.

Under ``NGBENCH_CI=1`` (set by ``.ci/run``) a skipped test fails the run unless it carries the
``gpu`` marker: a missing extra, a PostgreSQL cluster that did not start or an absent browser is
a broken CI machine, not a pass. The terminal summary always states how many tests of each
external dependency actually executed, so a reader of the CI log sees what was exercised.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

#: Markers whose executed tests are counted in the summary (registered in pyproject.toml).
COUNTED_MARKERS = ("postgres", "browser", "ray", "kfac_jax", "slow", "gpu")
#: The user property that carries a test's marker names from an xdist worker to the controller
#: (keywords would also match parametrisation ids).
MARKERS_PROPERTY = "ngbench_markers"
#: The only marker whose tests may skip under CI (no CUDA device on the CI machine).
SKIPPABLE_UNDER_CI = "gpu"


def minutes_selected() -> bool:
    return os.environ.get("NGBENCH_SLOW_TESTS") == "1"


def ci_enforced() -> bool:
    return os.environ.get("NGBENCH_CI") == "1"


class CiGuard:
    """Collects skips and executed counts from the test reports (on the xdist controller too)."""

    def __init__(self) -> None:
        self.executed: Counter[str] = Counter()
        self.forbidden_skips: list[str] = []

    def record(self, report: pytest.TestReport) -> None:
        markers = dict(report.user_properties).get(MARKERS_PROPERTY, ())
        if report.skipped and not hasattr(report, "wasxfail"):
            if SKIPPABLE_UNDER_CI not in markers:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                self.forbidden_skips.append(f"{report.nodeid}: {reason}")
            return
        if report.when == "call":
            self.executed["all"] += 1
            for marker in COUNTED_MARKERS:
                if marker in markers:
                    self.executed[marker] += 1

    def summary_lines(self) -> list[str]:
        counts = ", ".join(f"{m} {self.executed[m]}" for m in COUNTED_MARKERS)
        return [f"executed: {self.executed['all']} tests; by dependency: {counts}"]


_GUARD = CiGuard()
_DESELECTED_MINUTES: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (never skip) the ``minutes`` tests unless ``NGBENCH_SLOW_TESTS=1``; the summary says so."""
    if minutes_selected():
        return
    kept = [item for item in items if item.get_closest_marker("minutes") is None]
    dropped = [item for item in items if item.get_closest_marker("minutes") is not None]
    if dropped:
        _DESELECTED_MINUTES.extend(item.nodeid for item in dropped)
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if not any(name == MARKERS_PROPERTY for name, _ in item.user_properties):
        item.user_properties.append((MARKERS_PROPERTY, sorted({m.name for m in item.iter_markers()})))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _GUARD.record(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return
    for line in _GUARD.summary_lines():
        terminalreporter.write_line(line)
    if _DESELECTED_MINUTES:
        terminalreporter.write_line(
            f"deselected {len(_DESELECTED_MINUTES)} minutes-long calibration checks (NGBENCH_SLOW_TESTS=1 runs them)"
        )
    if ci_enforced() and _GUARD.forbidden_skips:
        terminalreporter.write_line(
            f"NGBENCH_CI=1: {len(_GUARD.forbidden_skips)} test(s) skipped without the 'gpu' marker:", red=True
        )
        for line in _GUARD.forbidden_skips:
            terminalreporter.write_line(f"  {line}", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return
    if ci_enforced() and _GUARD.forbidden_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
