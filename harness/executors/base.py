"""The executor interface shared by the local and the Ray executor.

Life cycle (the orchestrator in :mod:`harness.orchestrator` drives it)::

    with executor:                      # start(): launch lanes / connect to Ray
        env = executor.probe("torch")   # environment fingerprint of the target devices
        for job in jobs:
            executor.submit(job)        # queued; runs as slots free up
        while executor.pending:
            outcome = executor.next_outcome(timeout=0.5)   # None on timeout
            ...                          # the parent stores it
    # on Ctrl-C: outcomes = executor.interrupt()  (in-flight jobs come back ``interrupted``)

Outcomes arrive in completion order, not submission order.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from harness.worker import Job, Outcome


class Executor(ABC):
    """Runs jobs in fresh worker processes and streams their outcomes back."""

    name: str = "executor"

    def __init__(self) -> None:
        self.backends: Sequence[str] = ("torch",)
        self.suites: Sequence[str] = ()

    def prepare(self, backends: Sequence[str], suites: Sequence[str]) -> None:
        """Tell the executor what the sweep uses (workers preload it); call before :meth:`start`."""
        self.backends = tuple(backends)
        self.suites = tuple(suites)

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many jobs run at once."""

    @property
    @abstractmethod
    def pending(self) -> int:
        """Jobs submitted whose outcome has not been returned yet."""

    @property
    def in_flight(self) -> int:
        """Jobs running right now (at most :attr:`slots`)."""
        return min(self.pending, self.slots)

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def probe(self, backend: str) -> dict[str, Any]:
        """The environment fingerprint a run of ``backend`` gets (computed by a worker)."""

    @abstractmethod
    def submit(self, job: Job) -> None: ...

    @abstractmethod
    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        """The next finished job, or ``None`` if none finished within ``timeout`` seconds."""

    @abstractmethod
    def interrupt(self, hurry: threading.Event | None = None) -> list[Outcome]:
        """Stop: drop queued jobs, stop running ones; returns the running jobs' outcomes
        (``interrupted`` unless they finished meanwhile). Once ``hurry`` is set (a second
        Ctrl-C) nothing is waited for any more: workers are killed and the jobs still running
        come back ``interrupted`` at once."""

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return f"{self.name} ({self.slots} slot{'s' if self.slots != 1 else ''})"

    def __enter__(self) -> Executor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
