"""Run leases: a running sweep claims each run before it starts it, so two sweeps of the same
file at once split the work instead of doing it twice.

A lease is a row of ``run_leases`` keyed by the run key (``<sweep id>:<run key>`` for a nightly,
which re-measures within its own sweep). A sweep claims a run right before dispatching it and
releases the claim once the result is stored (or when the sweep ends). Claiming is one
transaction under the same per-key lock that :meth:`db.store.Store.save_run_once` takes, and it
looks at both the results and the leases:

* the run already finished (in the scope that counts) → ``finished``: nothing to do;
* another live sweep holds the lease → ``leased``: leave the run to it;
* otherwise (no lease, our own, an expired one, or one whose owner process is dead on this
  host) → ``claimed``: the lease is ours until ``now + ttl``.

A claim lives ``ttl`` seconds and the owner renews its claims while the runs are in flight
(:func:`renew`). A sweep killed with ``kill -9`` renews nothing: on its own host its claims are
free again at once (the owner's pid is gone), elsewhere when they expire, so a killed sweep's
``--resume`` (or anybody else) can take its runs over.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db.errors import DatabaseError
from db.models import Run, RunLease
from db.statuses import FINISHED_STATUSES
from db.store import Store

#: Seconds a claim lives without renewal (renewed every third of it while its run is in flight).
LEASE_TTL_S = 120.0

CLAIMED, FINISHED, LEASED = "claimed", "finished", "leased"


def new_owner() -> str:
    """``host:pid:token``: who holds a lease (the token tells two sweeps of one process apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_is_dead(owner: str) -> bool:
    """Whether ``owner`` is a process of this host that no longer exists (its claims are void)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def lease_key(run_key: str, sweep_id: int | None) -> str:
    """The lease of ``run_key``: global for a plain sweep, per sweep for a nightly (``sweep_id``)."""
    return run_key if sweep_id is None else f"{sweep_id}:{run_key}"


def claim(store: Store, run_key: str, owner: str, *, sweep_id: int, scope: str, ttl_s: float = LEASE_TTL_S) -> str:
    """Claim the run ``run_key`` for ``owner``: :data:`CLAIMED`, :data:`FINISHED` or :data:`LEASED`.

    ``scope`` is ``"global"`` (a plain sweep: a result anywhere counts, one lease per key) or
    ``"sweep"`` (a nightly: only results and leases of ``sweep_id`` count).
    """
    key = lease_key(run_key, sweep_id if scope == "sweep" else None)
    now = time.time()  # a deadline other processes (and hosts) read: wall clock, not monotonic
    try:
        with store.engine.connect() as conn:
            store._lock_key(conn, run_key)
            with Session(bind=conn) as s:
                q = select(Run.id).where(Run.key == run_key, Run.status.in_(FINISHED_STATUSES))
                if scope == "sweep":
                    q = q.where(Run.sweep_id == sweep_id)
                if s.scalar(q.limit(1)) is not None:
                    conn.rollback()
                    return FINISHED
                held = s.get(RunLease, key)
                if held is not None and held.owner != owner and held.expires_at > now and not owner_is_dead(held.owner):
                    conn.rollback()
                    return LEASED
                if held is not None:
                    s.delete(held)
                    s.flush()
                s.add(RunLease(lease_key=key, sweep_id=sweep_id, owner=owner, expires_at=now + ttl_s))
                s.flush()
            conn.commit()
            return CLAIMED
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"could not claim a run in {store.display_url}: {getattr(exc, 'orig', None) or exc}"
        ) from None


def renew(store: Store, owner: str, keys: Iterable[str], ttl_s: float = LEASE_TTL_S) -> None:
    """Push the deadline of ``owner``'s leases ``keys`` (lease keys) to ``now + ttl_s``."""
    wanted = sorted(set(keys))
    if not wanted:
        return
    try:
        with store.session() as s, s.begin():
            s.execute(
                update(RunLease)
                .where(RunLease.owner == owner, RunLease.lease_key.in_(wanted))
                .values(expires_at=time.time() + ttl_s)
            )
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"could not renew run leases in {store.display_url}: {getattr(exc, 'orig', None) or exc}"
        ) from None


def release(store: Store, owner: str, keys: Iterable[str] | None = None) -> None:
    """Drop ``owner``'s leases (only ``keys``, lease keys, if given)."""
    stmt = delete(RunLease).where(RunLease.owner == owner)
    if keys is not None:
        wanted = sorted(set(keys))
        if not wanted:
            return
        stmt = stmt.where(RunLease.lease_key.in_(wanted))
    try:
        with store.session() as s, s.begin():
            s.execute(stmt)
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"could not release run leases in {store.display_url}: {getattr(exc, 'orig', None) or exc}"
        ) from None


def drop_stale(store: Store) -> int:
    """Delete the leases no live sweep holds (expired, or held by a dead process on this host);
    a killed sweep leaves such leases behind, also for runs it stored before it died."""
    now = time.time()
    try:
        with store.session() as s, s.begin():
            stale = [
                lease.lease_key
                for lease in s.scalars(select(RunLease))
                if lease.expires_at <= now or owner_is_dead(lease.owner)
            ]
            if stale:
                s.execute(delete(RunLease).where(RunLease.lease_key.in_(stale)))
            return len(stale)
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"could not clear stale run leases in {store.display_url}: {getattr(exc, 'orig', None) or exc}"
        ) from None
