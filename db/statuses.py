"""The run-status vocabulary, shared by the run loop, the sweeps, the database and the site.

It lives beside the schema (``runs.status``) so that the leaderboard, which must not import the
run loop and its adapter machinery, reads the same definitions as the harness.
"""

from __future__ import annotations

#: Every status a stored run can have (README "How a run is measured").
STATUSES: tuple[str, ...] = (
    "done",
    "target_reached",
    "budget_exhausted",
    "diverged",
    "oom",
    "timeout",
    "error",
    "crashed",
    "interrupted",
)
#: Statuses of a run that completed as the protocol intends (it is scored, never retried).
FINISHED_STATUSES: frozenset[str] = frozenset(
    {"done", "target_reached", "budget_exhausted", "diverged", "oom", "timeout"}
)
#: Statuses a sweep retries on resume.
RETRY_STATUSES: frozenset[str] = frozenset({"error", "crashed", "interrupted"})
#: Statuses of a method that failed (shown red on the site; a tuning trial with one of them is
#: never chosen).
FAILED_STATUSES: frozenset[str] = frozenset({"diverged", "oom", "timeout", "error", "crashed"})
#: Statuses never scored: the run was stopped by a person, not by the method.
UNSCORED_STATUSES: frozenset[str] = frozenset({"interrupted"})
