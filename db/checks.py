"""Storage pre-flight: is the database usable for writing *before* any work is done?

A command that trains and then stores (``run``, ``sweep``, ``nightly``, ``tune``, ``approx``)
calls :func:`preflight` right after connecting. It checks, in this order:

1. **Schema.** The Alembic revision is this ngbench's newest one (``connect`` migrates a
   database that is behind; a revision this ngbench does not know means a newer ngbench wrote it).
2. **Integrity** (SQLite). ``PRAGMA quick_check`` reads every page of the run, sweep and
   environment tables, and the path to the last page of the long series tables: a
   half-overwritten file ("database disk image is malformed") is refused here, not after an
   hour of training (a 50 MB database takes milliseconds).
3. **Write access.** A row is inserted into ``sweeps`` inside a transaction that is rolled back,
   so nothing stays behind. This is the same kind of write a run makes, with the same locks:
   a read-only file, directory or mount, a read-only PostgreSQL role or transaction, and a lock
   held by another process for longer than :data:`LOCK_WAIT_S` all fail here.

Every failure is a :class:`~db.errors.DatabaseError` with one line that names the database
(masked) and says what to do; :func:`explain` turns a driver error into such a line.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from db.engine import current_revision, head_revision, known_revisions, masked, scrub
from db.errors import DatabaseError, driver_reason, explain

#: How long the write check waits for another writer's lock before refusing (seconds). A
#: sweep's own writes hold the lock for milliseconds; a lock held this long is not one of them.
LOCK_WAIT_S = 10.0


def _fail(what: str, exc: BaseException, url: str) -> DatabaseError:
    reason = scrub(explain(driver_reason(exc), url), url)
    return DatabaseError(f"{what} {masked(url)}: {reason}")


def check_schema(engine: Engine, url: str) -> None:
    """The schema is at this ngbench's newest revision."""
    rev, head = current_revision(engine), head_revision()
    if rev == head:
        return
    if rev is not None and rev not in known_revisions():
        raise DatabaseError(
            f"database {masked(url)} has schema revision {rev}, newer than this ngbench knows (newest {head}): "
            "upgrade ngbench"
        )
    raise DatabaseError(
        f"database {masked(url)} is at schema revision {rev or 'none'}, not {head}: run ngbench db upgrade"
    )


#: The long-format series tables: most of a database's pages. Checking them page by page would
#: cost about a second per 50 MB before every run; the pre-flight reads the path to their last
#: page instead, which is what the next insert touches.
SERIES_TABLES = ("metrics", "approx_quality")
#: SQLite accepts a table name in ``PRAGMA quick_check(TABLE)`` from this version on.
_QUICK_CHECK_BY_TABLE = (3, 33, 0)


def check_integrity(engine: Engine, url: str) -> None:
    """SQLite only: every page of every table except :data:`SERIES_TABLES` readable and
    consistent (``PRAGMA quick_check``), and the series tables' last pages readable."""
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as conn:
            if sqlite3.sqlite_version_info < _QUICK_CHECK_BY_TABLE:
                rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
            else:
                tables = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars().all()
                rows = ["ok"]
                for table in tables:
                    if table in SERIES_TABLES:
                        conn.exec_driver_sql(f'SELECT MAX(id) FROM "{table}"').scalar()
                        continue
                    found = [r[0] for r in conn.exec_driver_sql(f'PRAGMA quick_check("{table}")').fetchall()]
                    if found != ["ok"]:
                        rows = found
                        break
    except (SQLAlchemyError, sqlite3.Error) as exc:
        rows = [driver_reason(exc)]
    if rows != ["ok"]:
        reason = scrub(str(rows[0]), url)
        raise DatabaseError(f"database {masked(url)} is damaged: {reason} (restore it from a copy, or use another)")


def check_writable(engine: Engine, url: str, *, lock_wait_s: float | None = None) -> None:
    """Insert a ``sweeps`` row in a transaction that is rolled back (see the module docstring);
    another writer's lock is waited for ``lock_wait_s`` (default :data:`LOCK_WAIT_S`)."""
    wait_ms = int((LOCK_WAIT_S if lock_wait_s is None else lock_wait_s) * 1000)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
                conn.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    _probe_insert(conn)
                    conn.rollback()
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={int(busy or 0)}")
            else:
                with conn.begin() as tx:
                    if engine.dialect.name == "postgresql":
                        conn.execute(text(f"SET LOCAL lock_timeout = {wait_ms}"))
                        conn.execute(text(f"SET LOCAL statement_timeout = {wait_ms + 5000}"))
                    _probe_insert(conn)
                    tx.rollback()
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        raise _fail("cannot write to database", exc, url) from None


def _probe_insert(conn) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO sweeps (name, kind, track, spec, status, started_at) "
            "VALUES ('ngbench-preflight', 'preflight', 'untuned', '{}', 'preflight', :now)"
        ),
        {"now": datetime.now(UTC)},
    )


def preflight(engine: Engine, url: str, *, lock_wait_s: float | None = None) -> None:
    """Refuse (``DatabaseError``, one line) a database that cannot take this command's results."""
    check_schema(engine, url)
    check_integrity(engine, url)
    check_writable(engine, url, lock_wait_s=lock_wait_s)
