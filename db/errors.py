"""Errors the storage layer raises. Their messages are meant for the user as they are (the
database URL in them is already masked); the CLI prints them on one line and exits with 2.
:func:`explain` turns a driver's error text into such a line: which file, directory or mount
is read-only, that a file is damaged, that another process holds the lock."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class DatabaseError(Exception):
    """The database is unreachable, unwritable, or its schema cannot be brought up to date."""


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (``file:`` URIs included), or ``None`` (in-memory, not SQLite)."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    name = u.database
    if name.startswith("file:"):
        name = name[len("file:") :].split("?", 1)[0]
    return Path(name)


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def explain(reason: str, url: str) -> str:
    """A driver's error text made actionable: why a SQLite file cannot be opened or written."""
    low = reason.lower()
    path = sqlite_path(url)
    if path is not None and ("unable to open database file" in low or "readonly" in low or "read-only" in low):
        folder = path.parent
        if _read_only_mount(folder):
            return f"{folder} is on a read-only file system (SQLite writes its journal next to the database)"
        if path.exists() and not os.access(path, os.W_OK):
            return f"the database file {path} is read-only (make it writable or pass another --db)"
        if not os.access(folder, os.W_OK):
            return f"the directory {folder} is not writable (SQLite writes its journal next to the database)"
        if "readonly" in low or "read-only" in low:
            return f"{reason} (opened read-only: pass a writable --db)"
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return f"{reason}: the file is damaged (restore it from a copy, or pass another --db)"
    if "locked" in low or "lock timeout" in low or "canceling statement due to lock" in low:
        return f"{reason}: another process holds a write lock (wait for it to finish, or stop it)"
    if "read-only transaction" in low or "permission denied" in low:
        return f"{reason} (the database role cannot write: use a role with INSERT rights)"
    return reason


def driver_reason(exc: BaseException) -> str:
    """The first line of a driver error (SQLAlchemy wraps it in ``exc.orig``)."""
    text_ = str(getattr(exc, "orig", None) or exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__
