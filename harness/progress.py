"""Sweep progress: a live rich display on a terminal, one plain line per finished run otherwise.

The display shows runs done / failed / remaining, the runs in flight and an ETA; "failed"
counts every run whose status is not a success (``done``, ``target_reached``,
``budget_exhausted``), i.e. it includes ``diverged``, ``oom`` and ``timeout``, which are
results nonetheless. When the output is not a terminal (CI logs, cron mail) there is no bar
and no control characters: each finished run prints one line.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from harness.worker import Outcome

OK_STATUSES = frozenset({"done", "target_reached", "budget_exhausted"})


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"ETA {h}:{m:02d}:{s:02d}" if h else f"ETA {m}:{s:02d}"


class SweepProgress:
    """Progress of one sweep; ``start`` → ``advance`` per outcome → ``stop``."""

    def __init__(self, console: Console | None = None, *, live: bool | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.live = self.console.is_terminal if live is None else live
        self.total = 0
        self.done = 0
        self.failed = 0
        self.skipped = 0
        self.slots = 1
        self._t0 = 0.0
        self._progress: Progress | None = None
        self._task: Any = None

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done)

    def eta(self) -> float | None:
        """Seconds left: the mean completion interval so far times the runs remaining."""
        if self.done == 0:
            return None
        return (time.monotonic() - self._t0) / self.done * self.remaining

    def _stats(self) -> str:
        in_flight = min(self.slots, self.remaining)
        return (
            f"done {self.done - self.failed} · failed {self.failed} · remaining {self.remaining} "
            f"({in_flight} running) · {_eta(self.eta())}"
        )

    def start(self, name: str, total: int, *, skipped: int = 0, slots: int = 1) -> None:
        self.total, self.skipped, self.slots = total, skipped, max(1, slots)
        self._t0 = time.monotonic()
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[stats]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(name, total=max(total, 1), stats=self._stats())

    def tick(self) -> None:
        """Refresh the ETA between outcomes."""
        if self._progress is not None:
            self._progress.update(self._task, stats=self._stats())

    def advance(self, outcome: Outcome, *, stored: bool = True) -> None:
        result = outcome.result
        self.done += 1
        if result.status not in OK_STATUSES:
            self.failed += 1
        seconds = outcome.wall_seconds
        took = f"{seconds:.1f} s" if seconds is not None else "-"
        note = "" if stored else "  (already finished by another sweep: not stored again)"
        error = ""
        if result.status not in OK_STATUSES and result.error:
            error = "  " + result.error.strip().splitlines()[-1][:160]
        line = f"[{self.done}/{self.total}] {result.status:<16} {outcome.job.label}  {took}{note}{error}"
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
            self._progress.update(self._task, completed=self.done, stats=self._stats())
        else:
            print(line, flush=True)

    def drop(self, count: int = 1) -> None:
        """``count`` planned runs will not run here after all (finished or claimed by another sweep)."""
        self.total = max(self.done, self.total - count)
        if self._progress is not None:
            self._progress.update(self._task, total=max(self.total, 1), stats=self._stats())

    def note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, flush=True)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, stats=self._stats())
            self._progress.stop()
            self._progress = None
