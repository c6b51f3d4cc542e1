"""Sweep plans: a validated sweep expanded into its runs (either track), and a plan run.

:func:`expand` resolves a validated sweep (:func:`harness.sweep.load_config`) and lists the runs
of the untuned track (:func:`harness.sweep.expand_untuned`) or the trials of the tuned track
(:func:`harness.tuning.expand_tuned`); :func:`load` reads and expands a sweep file.
:func:`run_plan` runs a plan into the database through an executor (both phases of a tuned
plan), as ``ngbench sweep``, ``ngbench nightly``, ``ngbench tune`` and ``ngbench quickstart`` do.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from db.limits import text_problems
from db.store import Store, open_store
from harness.errors import ConfigError
from harness.executors import EXECUTORS, make_executor
from harness.orchestrator import run_sweep
from harness.progress import SweepProgress
from harness.sweep import SweepConfig, SweepPlan, expand_untuned, load_config, resolve
from harness.tuning import expand_tuned, run_tuned


def expand(config: SweepConfig, *, where: str | None = None) -> SweepPlan:
    """Resolve every name and hyperparameter and list the runs (raises ``ConfigError``)."""
    where = where or config.name
    problems = text_problems("tag", config.tag)  # a --tag given on the command line
    if problems:
        raise ConfigError("--tag: " + "; ".join(problems))
    resolved = resolve(config, where)
    if config.tuning is not None:
        return expand_tuned(config, resolved, where)
    return expand_untuned(config, resolved, where)


def load(path: str | Path) -> SweepPlan:
    """Parse, validate and expand the sweep file at ``path``."""
    return expand(load_config(path), where=str(path))


def not_dumpable() -> None:
    """Make this process's memory and environment unreadable to same-user processes (Linux).

    The parent holds the database URL; with ``PR_SET_DUMPABLE=0`` an adapter running as the same
    (non-root) user cannot read it from ``/proc/<parent>/environ`` or ``/proc/<parent>/mem``.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def run_plan(
    kind: str,
    plan: SweepPlan,
    executor: str,
    devs: Any,
    n_workers: int | None,
    resume: bool,
    db: str | None,
    ray_address: str | None,
    isolation: str,
    *,
    console: Console,
    default_workers: int | None = None,
) -> tuple[Any, Store]:
    """Run a validated plan (plain or tuned); ``(summary, store)``. Skipped combinations and the
    progress of each phase are shown on ``console``. ``n_workers`` is what the user asked for,
    ``default_workers`` the command's own default for CPU workers (devices are planned by
    :func:`harness.devices.plan_devices`).

    Bad executor options fail before the database is touched, and an unreachable database
    before any worker starts. The summary is a :class:`harness.orchestrator.SweepSummary`, or for a
    tuned plan a :class:`harness.tuning.TuneSummary`.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if isolation not in ("fork", "spawn"):
        raise ConfigError(f"--isolation must be fork or spawn, got {isolation!r}")
    if plan.tuned and kind == "nightly":
        raise ConfigError("a nightly runs the untuned track (it re-measures its runs); remove trials from the file")
    options: dict[str, Any] = {"devices": devs, "workers": n_workers}
    if executor == "ray":
        options["ray_address"] = ray_address
    elif executor == "local":
        options.update(isolation=isolation, default_workers=default_workers)
    ex = make_executor(executor, **options)  # bad executor options fail before the database is touched
    store = open_store(db, writable=True)  # an unusable database fails here, before any worker starts
    not_dumpable()
    for note in plan.skipped:
        console.print(Text(f"skipped: {note}"))
    if not plan.tuned:
        return run_sweep(plan, store, ex, kind=kind, resume=resume, progress=SweepProgress(console)), store

    def progress(phase: str) -> SweepProgress:
        console.print(Text(f"{plan.name}: {phase}"))
        return SweepProgress(console)

    return run_tuned(plan, store, ex, kind=kind, resume=resume, progress=progress), store
