"""Jobs, their outcomes, and the result of a run whose worker produced none."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.runner import RunResult, RunSpec


def grace_period(timeout_s: float) -> float:
    """Extra seconds past a run's ``timeout_s`` before its worker is killed (the run loop
    stops cooperatively at ``timeout_s``; the kill is for code that never returns)."""
    return min(60.0, max(2.0, 0.25 * timeout_s))


# ---------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One run to execute: its position in the sweep, spec, expected key and wall limit."""

    index: int
    spec: RunSpec
    key: str | None = None
    #: The probed environment of the target device (used for results the worker never wrote).
    environment: Mapping[str, Any] = field(default_factory=dict)

    @property
    def timeout_s(self) -> float | None:
        return self.spec.timeout_s

    @property
    def label(self) -> str:
        s = self.spec
        extra = ",".join(f"{k}={v}" for k, v in s.hparams.items())
        return f"{s.suite} {s.optimizer}{'[' + extra + ']' if extra else ''} {s.board_backend} seed={s.seed}"


@dataclass
class Outcome:
    """A finished job: the result and where the time went (seconds, monotonic clock)."""

    job: Job
    result: RunResult
    #: ``queued``/``dispatched``/``received`` (parent), ``child_start``/``exec_start``/
    #: ``exec_end``/``written`` (worker), all ``time.monotonic()`` values: one clock for every
    #: process of a host (Linux ``CLOCK_MONOTONIC``), so only differences of stamps taken on the
    #: same host mean anything (a Ray task's stamps are compared with each other only).
    timing: dict[str, float] = field(default_factory=dict)
    lane: str = ""

    @property
    def run_seconds(self) -> float | None:
        t = self.timing
        return t["exec_end"] - t["exec_start"] if "exec_end" in t and "exec_start" in t else None

    @property
    def wall_seconds(self) -> float | None:
        """Seconds from dispatch to the result in the parent (``None`` if either is unknown)."""
        t = self.timing
        return t["received"] - t["dispatched"] if "received" in t and "dispatched" in t else None

    @property
    def overhead_seconds(self) -> float | None:
        """Wall time from dispatch to the result in the parent, minus the run itself."""
        t, run = self.timing, self.run_seconds
        if run is None or "dispatched" not in t or "received" not in t:
            return None
        return t["received"] - t["dispatched"] - run


def failed_result(job: Job, status: str, error: str) -> RunResult:
    """A result for a run whose worker produced none (crashed, killed, interrupted)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    env = dict(job.environment)
    return RunResult(
        spec=job.spec,
        status=status,
        error=error,
        key=job.key,
        environment=env,
        device=job.spec.device,
        started_at=now,
        finished_at=now,
    )
