"""Running a sweep: dedupe, dispatch to an executor, store each result once, survive failures.

Semantics (what "nothing lost, nothing twice" means here):

* **A sweep row owns its runs.** ``ngbench sweep`` creates a sweep row per invocation;
  ``--resume`` reopens the newest sweep of that name and kind instead.
* **Keys identify runs** (:func:`harness.keys.run_key`). Before dispatching, a run whose key
  already *finished* (``FINISHED_STATUSES``) is skipped: anywhere in the database for a plain
  sweep (results are a cache: re-running a sweep file only fills what is missing), within the
  same sweep for a nightly (a nightly re-measures everything, but a resumed nightly does not
  redo what it already did). Runs with ``RETRY_STATUSES`` (error, crashed, interrupted) are
  run again; their earlier attempts stay stored.
* **Concurrent sweeps** into one database may start the same key at the same time; the write
  is an atomic check-and-insert under a per-key lock (:meth:`db.store.Store.save_run_once`),
  so a finished key is stored once per scope and the later duplicate is discarded (and
  reported). Every finished run is present exactly once.
* **Failures are results.** The executor turns a diverging, raising, hanging, crashing or
  out-of-memory run into a result with its status and error text; other runs are unaffected.
* **Ctrl-C / SIGTERM** stop dispatching, stop in-flight workers, store them as
  ``interrupted`` and mark the sweep ``interrupted``; a second Ctrl-C is ignored until that
  is written. A hard kill of the parent loses only the in-flight runs (workers die with it);
  ``--resume`` redoes them.
* Only this process writes to the database; workers never see its URL.
* **Roles.** Each run is stored with its plan's role (:meth:`harness.sweep.SweepPlan.role_of`):
  ``run`` for an ordinary sweep, ``trial`` or ``rerun`` (with the trial index and the
  configuration hash) for the two phases of a tuned sweep (:mod:`harness.tuning`), which calls
  :func:`run_sweep` twice on one sweep row (``sweep_id``, ``finish``).
"""

from __future__ import annotations

import collections
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from db.store import Store
from harness import recovery
from harness.errors import DatabaseError
from harness.executors.base import Executor
from harness.progress import SweepProgress
from harness.sweep import SweepPlan, expected_key
from harness.worker import Job, Outcome

#: Attempts to store one result before the sweep gives up on an unreachable database.
STORE_ATTEMPTS = 5


@dataclass
class SweepSummary:
    """What one invocation of a sweep did."""

    sweep_id: int
    name: str
    kind: str
    planned: int
    skipped_finished: int = 0
    duplicates_in_plan: int = 0
    stored: int = 0
    discarded: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    interrupted: bool = False
    resumed: bool = False
    wall_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    key_mismatches: int = 0
    executor: str = ""
    #: Expected key of every planned run, by its index in the plan (duplicates included).
    keys: dict[int, str] = field(default_factory=dict)
    #: Results the database would not take, kept in ``recovery_file`` (``ngbench db recover``).
    recovered: int = 0
    recovery_file: str | None = None
    storage_error: str = ""

    @property
    def ran(self) -> int:
        return sum(self.statuses.values())


class _StopFlag:
    """SIGINT/SIGTERM become a flag checked between outcomes (never mid-write); a second one
    raises ``KeyboardInterrupt`` at once (a start-up that takes too long)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _ignoring_signals() -> Any:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _store(
    store: Store, outcome: Outcome, *, sweep_id: int, scope: str, track: str, plan: SweepPlan
) -> tuple[int | None, bool]:
    role = plan.role_of(outcome.job.index)
    delay = 0.5
    for attempt in range(STORE_ATTEMPTS):
        try:
            return store.save_run_once(
                outcome.result,
                sweep_id=sweep_id,
                scope=scope,
                track=track,
                role=role.role,
                trial=role.trial,
                config_hash=role.config_hash,
            )
        except DatabaseError:
            if attempt == STORE_ATTEMPTS - 1:
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _keep(
    store: Store,
    outcome: Outcome,
    summary: SweepSummary,
    exc: DatabaseError,
    *,
    sweep_id: int,
    track: str,
    plan: SweepPlan,
) -> None:
    """Append a result the database would not take to the recovery file (:mod:`harness.recovery`)."""
    role = plan.role_of(outcome.job.index)
    save = {
        "sweep_id": sweep_id,
        "track": track,
        "role": role.role,
        "trial": role.trial,
        "config_hash": role.config_hash,
    }
    try:
        summary.recovery_file = str(recovery.write([(outcome.result, save)], store.url))
    except OSError as why:
        raise DatabaseError(f"{exc}; the result could not be kept either: {why}") from None
    summary.recovered += 1
    summary.storage_error = str(exc)
    outcome.timing["kept"] = 1.0


def run_sweep(
    plan: SweepPlan,
    store: Store,
    executor: Executor,
    *,
    kind: str = "sweep",
    resume: bool = False,
    progress: SweepProgress | None = None,
    on_outcome: Callable[[Outcome, bool], None] | None = None,
    close_executor: bool = True,
    sweep_id: int | None = None,
    finish: bool = True,
) -> SweepSummary:
    """Run ``plan`` on ``executor`` into ``store`` (see the module docstring for semantics).

    The executor is started here (if it is not running) and closed before returning, unless
    ``close_executor`` is false (several sweeps on one executor keep its warm workers).
    ``sweep_id``: store into this existing sweep row (the second phase of a tuned sweep) instead
    of creating or resuming one. ``finish=False`` leaves a sweep that completed marked
    ``running`` (a later phase finishes it); an interrupted or failed one is marked as such.
    """
    t0 = time.perf_counter()
    config = plan.config
    resumed = False
    if sweep_id is None:
        sweep_id = store.latest_sweep(plan.name, kind) if resume else None
        resumed = sweep_id is not None
        if sweep_id is None:
            sweep_id = store.create_sweep(plan.name, kind=kind, track=config.track, tag=config.tag, spec=plan.to_dict())
        else:
            store.reopen_sweep(sweep_id)
    else:
        store.reopen_sweep(sweep_id)
    summary = SweepSummary(sweep_id=sweep_id, name=plan.name, kind=kind, planned=len(plan.specs), resumed=resumed)
    scope = "sweep" if kind == "nightly" else "global"
    stop = _StopFlag()
    completed = False

    def record(outcome: Outcome) -> None:
        before = time.time()
        try:
            _, stored = _store(store, outcome, sweep_id=sweep_id, scope=scope, track=config.track, plan=plan)
        except DatabaseError as exc:  # nothing computed is thrown away: keep it for `ngbench db recover`
            stored = False
            _keep(store, outcome, summary, exc, sweep_id=sweep_id, track=config.track, plan=plan)
        outcome.timing["store_start"] = before
        outcome.timing["stored"] = time.time()
        summary.statuses[outcome.result.status] += 1
        summary.stored += int(stored)
        summary.discarded += int(not stored and not outcome.timing.get("kept"))
        if outcome.job.key and outcome.result.key and outcome.result.key != outcome.job.key:
            summary.key_mismatches += 1
        summary.outcomes.append(outcome)
        if progress is not None:
            progress.advance(outcome, stored=stored)
        if on_outcome is not None:
            on_outcome(outcome, stored)

    try:
        with stop:
            executor.prepare(plan.backends, sorted({s.suite for s in plan.specs}))
            executor.start()
            summary.executor = executor.describe()
            environments = {b: executor.probe(b) for b in plan.backends}
            summary.environment = environments[plan.backends[0]]
            store.set_sweep_environment(sweep_id, summary.environment)

            jobs: list[Job] = []
            seen: set[str] = set()
            for index, spec in enumerate(plan.specs):
                env = environments[spec.backend]
                key = expected_key(spec, env, plan.adapters.get((spec.optimizer, spec.backend)))
                summary.keys[index] = key
                if key in seen:
                    summary.duplicates_in_plan += 1
                    continue
                seen.add(key)
                jobs.append(Job(index=index, spec=spec, key=key, environment=env))
            finished = store.finished_keys_among(
                [j.key for j in jobs if j.key], sweep_id=sweep_id if scope == "sweep" else None
            )
            todo = [j for j in jobs if j.key not in finished]
            summary.skipped_finished = len(jobs) - len(todo)

            if progress is not None:
                progress.start(plan.name, len(todo), skipped=summary.skipped_finished, slots=executor.slots)
            for job in todo:
                executor.submit(job)

            while executor.pending > 0 and not stop.requested:
                outcome = executor.next_outcome(timeout=0.5)
                if outcome is None:
                    if progress is not None:
                        progress.tick()
                    continue
                record(outcome)
            if stop.requested:
                summary.interrupted = True
                if progress is not None:
                    progress.note(f"{stop.signal_name}: stopping {executor.in_flight} running run(s) ...")
                with _ignoring_signals():  # the in-flight runs are stored as interrupted, whatever happens
                    for outcome in executor.interrupt():
                        record(outcome)
        completed = True
    except KeyboardInterrupt:  # a second Ctrl-C (e.g. during a slow start-up)
        summary.interrupted = True
        with _ignoring_signals(), contextlib.suppress(Exception):
            for outcome in executor.interrupt():
                record(outcome)
        completed = True
    finally:
        if progress is not None:
            progress.stop()
        if close_executor or summary.interrupted or not completed:
            executor.close()
        summary.wall_s = time.perf_counter() - t0
        with contextlib.suppress(DatabaseError):
            status = "interrupted" if summary.interrupted else "finished" if completed else "failed"
            if finish or status != "finished":
                store.finish_sweep(sweep_id, status)
    return summary
