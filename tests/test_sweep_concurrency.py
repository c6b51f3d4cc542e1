"""Eight concurrent sweeps into one database (SQLite file, PostgreSQL): every run present once,
no errors. The sweeps overlap on purpose, so several of them race for the same run keys."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest
from sqlalchemy import text

from db.store import open_store
from harness.environment import fingerprint
from harness.orchestrator import run_sweep
from harness.plans import expand
from harness.runner import RunResult, RunSpec, execute
from harness.sweep import load_config
from harness.worker.transport import _preload
from tests.sweep_helpers import InlineExecutor

pytestmark = pytest.mark.slow  # concurrency races: eight sweeps at once

SWEEPS = 8
SHARED = 3  # seeds every sweep races for


def seeds_of(i: int) -> list[int]:
    return [i % SHARED, (i + 1) % SHARED, SHARED + i]


def one_sweep(args: tuple[str, int, str]) -> dict[str, Any]:
    """Body of one concurrent process: its own engine, its own sweep."""
    url, i, kind = args
    store = open_store(url)
    plan = expand(
        load_config(
            {"name": f"{kind}-race", "suites": ["tiny-ce"], "optimizers": ["sgd"], "seeds": seeds_of(i), "steps": 3}
        )
    )
    summary = run_sweep(plan, store, InlineExecutor(), kind=kind)
    store.dispose()
    return {
        "sweep_id": summary.sweep_id,
        "stored": summary.stored,
        "discarded": summary.discarded,
        "skipped": summary.skipped_finished,
        "leased": summary.leased_elsewhere,
        "ran": summary.ran,
        "keys": sorted(o.result.key for o in summary.outcomes),
    }


def race(url: str, kind: str) -> list[dict[str, Any]]:
    open_store(url).dispose()  # migrate once up front (concurrent first migration is engine.py's test)
    # Warm this process (lazy torch imports, suite data, git state) so that the forked sweeps
    # spend their time racing for the database, not importing sympy eight times.
    _preload(["torch"], ["tiny-ce"])
    fingerprint("torch", "cpu")
    execute(RunSpec("tiny-ce", "sgd", steps=1, device="cpu"))
    # fork is safe here (CPU torch, one thread, no other threads); otherwise pay for spawn
    method = "fork" if threading.active_count() == 1 else "spawn"
    with multiprocessing.get_context(method).Pool(SWEEPS) as pool:
        return pool.map(one_sweep, [(url, i, kind) for i in range(SWEEPS)])


def check(url: str, kind: str, results: list[dict[str, Any]]) -> None:
    store = open_store(url)
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT sweep_id, key, status FROM runs")).all()
        sweeps = conn.execute(text("SELECT id, status FROM sweeps")).all()
    store.dispose()
    assert len(sweeps) == SWEEPS and {s for _, s in sweeps} == {"finished"}
    assert {s for _, _, s in rows} <= {"budget_exhausted", "target_reached"}  # no errors anywhere
    all_keys = {k for r in results for k in r["keys"]} | {k for _, k, _ in rows}
    assert len(all_keys) == SHARED + SWEEPS
    if kind == "sweep":
        # Results are a cache: each key is stored once in the whole database, by one sweep.
        assert sorted(k for _, k, _ in rows) == sorted(all_keys)
        assert sum(r["stored"] for r in results) == len(all_keys)
        # Each planned run was stored, found finished, left to the sweep that had claimed it, or
        # (a claim lost to a lease expiry) discarded as a duplicate.
        assert sum(r["stored"] + r["discarded"] + r["skipped"] + r["leased"] for r in results) == SWEEPS * 3
    else:
        # A nightly owns its runs: each of its keys once in that sweep.
        per_sweep: dict[int, list[str]] = {}
        for sid, k, _ in rows:
            per_sweep.setdefault(sid, []).append(k)
        assert all(sorted(keys) == sorted(set(keys)) and len(keys) == 3 for keys in per_sweep.values())
        assert len(per_sweep) == SWEEPS and all(r["discarded"] == 0 for r in results)
        assert all(r["leased"] == 0 for r in results)  # a nightly's claims are its own


@pytest.mark.parametrize("kind", ["sweep", "nightly"])
def test_eight_concurrent_sweeps_into_one_sqlite_file(tmp_path: Any, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    check(url, kind, race(url, kind))


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["sweep", "nightly"])
def test_eight_concurrent_sweeps_into_one_postgres_database(pg_url: str, kind: str) -> None:
    check(pg_url, kind, race(pg_url, kind))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_save_run_once_is_atomic_per_scope(tmp_path: Any, request: pytest.FixtureRequest, backend: str) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'once.db'}"
    store = open_store(url)
    a, b = store.create_sweep("a"), store.create_sweep("b", kind="nightly")
    spec = RunSpec("tiny-ce", "sgd")
    done = RunResult(spec=spec, status="budget_exhausted", key="k1", metrics=[(0, 0.0, "train_loss", 1.0)])
    failed = RunResult(spec=spec, status="crashed", key="k1", error="boom")
    assert store.save_run_once(failed, sweep_id=a, scope="global")[1]  # attempts are kept
    first, stored = store.save_run_once(done, sweep_id=a, scope="global")
    assert stored
    assert store.save_run_once(done, sweep_id=a, scope="global") == (first, False)
    assert store.save_run_once(failed, sweep_id=a, scope="global") == (first, False)  # finished beats retry
    assert store.save_run_once(done, sweep_id=b, scope="sweep")[1]  # another sweep's own copy
    assert not store.save_run_once(done, sweep_id=b, scope="sweep")[1]
    assert store.finished_keys_among(["k1", "k2"]) == {"k1"}
    assert store.finished_keys_among(["k1"], sweep_id=b) == {"k1"}
    assert store.latest_sweep("b", "nightly") == b and store.latest_sweep("b") is None
    with store.engine.connect() as conn:
        n_metrics = conn.execute(text("SELECT COUNT(*) FROM metrics")).scalar()
    assert n_metrics == 2  # one row per stored finished run, none from the discarded duplicates
    store.dispose()
