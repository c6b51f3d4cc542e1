"""Run leases (db.leases): a claim per run key, refused to other live sweeps, void when its
owner died or it expired, and never granted for a run that already finished. Same behaviour on
SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from db import leases
from db.models import RunLease
from db.store import Store, open_store
from harness.runner import RunResult, RunSpec


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    url = f"sqlite:///{tmp_path / 'l.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    yield s
    s.dispose()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leases(store: Store) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT lease_key, owner FROM run_leases ORDER BY lease_key"))]


def test_a_claimed_run_is_refused_to_another_live_sweep_until_released(store: Store) -> None:
    sweep = store.create_sweep("leases")
    a, b = leases.new_owner(), leases.new_owner()
    assert leases.claim(store, "k1", a, sweep_id=sweep, scope="global") == leases.CLAIMED
    assert leases.claim(store, "k1", a, sweep_id=sweep, scope="global") == leases.CLAIMED  # its own
    assert leases.claim(store, "k1", b, sweep_id=sweep, scope="global") == leases.LEASED
    assert leases.claim(store, "k2", b, sweep_id=sweep, scope="global") == leases.CLAIMED
    assert _leases(store) == [("k1", a), ("k2", b)]
    leases.release(store, a, ["k1"])
    assert leases.claim(store, "k1", b, sweep_id=sweep, scope="global") == leases.CLAIMED
    leases.release(store, b)
    assert _leases(store) == []


def test_an_expired_claim_or_one_of_a_dead_process_is_taken_over(store: Store) -> None:
    sweep = store.create_sweep("leases")
    live, other = leases.new_owner(), leases.new_owner()
    assert leases.claim(store, "k1", live, sweep_id=sweep, scope="global", ttl_s=0.2) == leases.CLAIMED
    time.sleep(0.3)
    assert leases.claim(store, "k1", other, sweep_id=sweep, scope="global") == leases.CLAIMED
    dead = f"{socket.gethostname()}:{_dead_pid()}:deadbeef"
    assert leases.owner_is_dead(dead) and not leases.owner_is_dead(live)
    assert not leases.owner_is_dead(f"another-host.example:{_dead_pid()}:x")  # cannot tell: wait for expiry
    assert leases.claim(store, "k2", dead, sweep_id=sweep, scope="global") == leases.CLAIMED
    assert leases.claim(store, "k2", other, sweep_id=sweep, scope="global") == leases.CLAIMED
    assert _leases(store) == [("k1", other), ("k2", other)]
    leases.renew(store, other, ["k1", "k2"], ttl_s=0.01)
    time.sleep(0.05)
    assert leases.claim(store, "k1", live, sweep_id=sweep, scope="global") == leases.CLAIMED


def test_a_finished_run_is_never_claimed_and_a_nightly_claims_within_its_sweep(store: Store) -> None:
    first, nightly = store.create_sweep("a"), store.create_sweep("n", kind="nightly")
    result = RunResult(spec=RunSpec("tiny-ce", "sgd", steps=1), status="budget_exhausted", key="k1")
    store.save_run_once(result, sweep_id=first, scope="global")
    owner = leases.new_owner()
    assert leases.claim(store, "k1", owner, sweep_id=first, scope="global") == leases.FINISHED
    # A nightly re-measures: a result of another sweep does not count, nor a lease of the key.
    assert leases.claim(store, "k2", owner, sweep_id=first, scope="global") == leases.CLAIMED
    assert leases.claim(store, "k1", owner, sweep_id=nightly, scope="sweep") == leases.CLAIMED
    assert leases.claim(store, "k2", leases.new_owner(), sweep_id=nightly, scope="sweep") == leases.CLAIMED
    assert sorted(k for k, _ in _leases(store)) == sorted(["k2", f"{nightly}:k1", f"{nightly}:k2"])


def test_a_new_sweep_drops_the_leases_a_killed_sweep_left_behind(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'l.db'}")
    live = leases.new_owner()
    dead = f"{socket.gethostname()}:999999999:deadbeef0000"  # no such process on this host
    with store.session() as s, s.begin():
        s.add(RunLease(lease_key="dead", sweep_id=None, owner=dead, expires_at=time.time() + 100))
        s.add(RunLease(lease_key="expired", sweep_id=None, owner=live, expires_at=time.time() - 1))
        s.add(RunLease(lease_key="held", sweep_id=None, owner=live, expires_at=time.time() + 100))
    assert leases.drop_stale(store) == 2
    with store.session() as s:
        assert [lease.lease_key for lease in s.query(RunLease)] == ["held"]
    store.dispose()
