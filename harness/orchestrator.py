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
* **Concurrent sweeps** into one database split the work: a sweep claims each run right before
  dispatching it (a lease per run key, :mod:`db.leases`) and skips runs another live sweep has
  claimed or finished, so two sweeps of one file run each run once. The write itself is still
  an atomic check-and-insert under a per-key lock (:meth:`db.store.Store.save_run_once`), so
  a finished key is stored once per scope even if a lease was lost (and the later duplicate
  is discarded and reported). A killed sweep's leases are void at once on its host (its pid
  is gone) and elsewhere when they expire, so ``--resume`` takes its runs back.
* **Failures are results.** The executor turns a diverging, raising, hanging, crashing or
  out-of-memory run into a result with its status and error text; other runs are unaffected.
  The summary counts the runs that failed to give a result of the method
  (:data:`RUN_FAILURE_STATUSES`); the CLI exits non-zero for them.
* **Ctrl-C / SIGTERM** stop dispatching, stop in-flight workers (SIGINT, SIGKILL after 3 s),
  store them as ``interrupted`` and mark the sweep ``interrupted``; a second Ctrl-C kills the
  workers at once and stops within a second (the runs are still stored ``interrupted``). A
  hard kill of the parent loses only the in-flight runs (workers die with it); ``--resume``
  redoes them. A killed worker launcher (local executor) is restarted and its in-flight runs
  start again: they are stored once, with the status of their second start.
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

from db import leases
from db.store import Store
from harness import recovery
from harness.errors import DatabaseError
from harness.executors.base import Executor
from harness.progress import SweepProgress
from harness.sweep import SweepPlan, expected_key
from harness.worker import Job, Outcome

#: Attempts to store one result before the sweep gives up on an unreachable database.
STORE_ATTEMPTS = 5
#: Statuses of runs that failed to give a result of the method (the harness, the worker or the
#: adapter broke, or the run hung): a sweep with any of them exits non-zero. ``diverged``,
#: ``oom`` and a missed target are results of the method, not failures of the sweep.
RUN_FAILURE_STATUSES: frozenset[str] = frozenset({"crashed", "error", "timeout"})


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
    #: Runs left to another sweep that had claimed them (it runs them).
    leased_elsewhere: int = 0
    #: Runs started again because the worker launcher died under them (local executor).
    relaunched: int = 0
    #: A second Ctrl-C hurried the stop (the caller should exit at once).
    hurried: bool = False
    #: Results the database would not take, kept in ``recovery_file`` (``ngbench db recover``).
    recovered: int = 0
    recovery_file: str | None = None
    storage_error: str = ""

    @property
    def ran(self) -> int:
        return sum(self.statuses.values())

    @property
    def failures(self) -> dict[str, int]:
        """Runs by failure status (:data:`RUN_FAILURE_STATUSES`) among those that ran."""
        return {s: n for s, n in sorted(self.statuses.items()) if s in RUN_FAILURE_STATUSES and n}


class _StopFlag:
    """SIGINT/SIGTERM become a flag checked between outcomes (never mid-write). A second one
    raises ``KeyboardInterrupt`` at once during start-up, and sets :attr:`hurry` while the
    in-flight runs are being stopped (the executor then kills them instead of waiting)."""

    def __init__(self) -> None:
        self.requested = False
        self.stopping = False
        self.hurry = threading.Event()
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.stopping:
            self.hurry.set()  # only an event: the main thread may hold the executor's locks
            return
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


def _relaunched_runs(executor: Executor) -> int:
    """Run starts the executor's lanes repeated because their launcher died (local executor)."""
    return sum(getattr(lane, "relaunched_runs", 0) for lane in getattr(executor, "lanes", ()))


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
    relaunched_before = _relaunched_runs(executor)
    stop = _StopFlag()
    completed = False
    owner = leases.new_owner()
    with contextlib.suppress(DatabaseError):  # what a killed sweep left behind; they expire anyway
        leases.drop_stale(store)
    held: dict[str, str] = {}  # run key -> lease key, for the runs this sweep claimed

    def release(job: Job) -> None:
        lease = held.pop(job.key, None) if job.key else None
        if lease is not None:
            with contextlib.suppress(DatabaseError):  # it expires anyway
                leases.release(store, owner, [lease])

    def record(outcome: Outcome) -> None:
        before = time.monotonic()
        try:
            _, stored = _store(store, outcome, sweep_id=sweep_id, scope=scope, track=config.track, plan=plan)
        except DatabaseError as exc:  # nothing computed is thrown away: keep it for `ngbench db recover`
            stored = False
            _keep(store, outcome, summary, exc, sweep_id=sweep_id, track=config.track, plan=plan)
        release(outcome.job)
        outcome.timing["store_start"] = before
        outcome.timing["stored"] = time.monotonic()
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
            queue = collections.deque(todo)
            renewed = time.monotonic()

            def dispatch() -> None:
                """Claim and submit runs until the executor has one more than it can run."""
                while queue and executor.pending <= executor.slots and not stop.requested:
                    job = queue.popleft()
                    verdict, claimed = leases.CLAIMED, False
                    if job.key is not None:
                        with contextlib.suppress(DatabaseError):  # unclaimed, it risks only a duplicate
                            verdict = leases.claim(store, job.key, owner, sweep_id=sweep_id, scope=scope)
                            claimed = True
                    if verdict == leases.CLAIMED:
                        if job.key is not None and claimed:
                            held[job.key] = leases.lease_key(job.key, sweep_id if scope == "sweep" else None)
                        executor.submit(job)
                        continue
                    if verdict == leases.FINISHED:
                        summary.skipped_finished += 1
                    else:
                        summary.leased_elsewhere += 1
                    if progress is not None:
                        progress.drop()

            dispatch()
            while executor.pending > 0 and not stop.requested:
                outcome = executor.next_outcome(timeout=0.5)
                if time.monotonic() - renewed > leases.LEASE_TTL_S / 3:
                    with contextlib.suppress(DatabaseError):  # a missed renewal only risks a duplicate
                        leases.renew(store, owner, held.values())
                    renewed = time.monotonic()
                if outcome is None:
                    if progress is not None:
                        progress.tick()
                    continue
                record(outcome)
                dispatch()
            if stop.requested:
                summary.interrupted = True
                if progress is not None:
                    progress.note(
                        f"{stop.signal_name}: stopping {executor.in_flight} running run(s) "
                        "(press Ctrl-C again to kill them now) ..."
                    )
                stop.stopping = True  # a second signal now hurries the stop instead of raising
                for outcome in executor.interrupt(stop.hurry):
                    record(outcome)
        completed = True
    except KeyboardInterrupt:  # a second Ctrl-C (e.g. during a slow start-up)
        summary.interrupted = True
        stop.stopping = True
        stop.hurry.set()
        with _ignoring_signals(), contextlib.suppress(Exception):
            for outcome in executor.interrupt(stop.hurry):
                record(outcome)
        completed = True
    finally:
        if progress is not None:
            progress.stop()
        summary.relaunched = _relaunched_runs(executor) - relaunched_before
        summary.hurried = stop.hurry.is_set()
        with stop if stop.stopping else contextlib.nullcontext():  # a late Ctrl-C only hurries
            if close_executor or summary.interrupted or not completed:
                executor.close()
        with contextlib.suppress(DatabaseError):
            leases.release(store, owner)
        summary.wall_s = time.perf_counter() - t0
        with contextlib.suppress(DatabaseError):
            status = "interrupted" if summary.interrupted else "finished" if completed else "failed"
            if finish or status != "finished":
                store.finish_sweep(sweep_id, status)
    return summary
