"""Recovery files: results whose storage failed, kept until ``ngbench db recover`` stores them.

When the database fails *after* a run has trained (the disk filled up, the server went away, the
file was damaged meanwhile), the result is appended to a recovery file instead of being thrown
away: one JSON object per line,

    {"format": "ngbench-recovery", "version": 1, "kind": "run", "database": <masked URL>,
     "written_at": <ISO time>, "save": {"sweep_id", "track", "role", "trial", "config_hash"},
     "result": <RunResult.to_dict()>}

The file lies next to a SQLite database (``<file>.recovery.jsonl``), else in the current
directory (``ngbench-recovery.jsonl``; also when the database's directory is not writable),
else in the temporary directory. :func:`recover` stores every record of such a file; it is
idempotent, since a record whose attempt is already stored (same key, start and finish time,
status and step count: :meth:`db.store.Store.save_run_unless_stored`) is not stored again.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db.engine import masked
from db.errors import sqlite_path
from db.store import Store
from harness.errors import ConfigError, DatabaseError
from harness.runner import RunResult

FORMAT = "ngbench-recovery"
VERSION = 1
FILE_SUFFIX = ".recovery.jsonl"
DEFAULT_NAME = "ngbench-recovery.jsonl"


def candidate_paths(url: str) -> list[Path]:
    """Where a recovery file for ``url`` goes, best first."""
    db_file = sqlite_path(url)
    out = []
    if db_file is not None:
        out.append(db_file.with_name(db_file.name + FILE_SUFFIX))
        out.append(Path.cwd() / (db_file.name + FILE_SUFFIX))
    else:
        out.append(Path.cwd() / DEFAULT_NAME)
    out.append(Path(tempfile.gettempdir()) / DEFAULT_NAME)
    return out


def record(result: RunResult, url: str, **save: Any) -> dict[str, Any]:
    """The recovery record of ``result`` (``save``: the arguments it was being stored with)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": "run",
        "database": masked(url),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "save": save,
        "result": result.to_dict(),
    }


def write(results: list[tuple[RunResult, dict[str, Any]]], url: str) -> Path:
    """Append ``(result, save arguments)`` records to the first writable recovery file; its path.

    Each record is one ``write`` of one line on a file opened for appending, so concurrent
    writers do not interleave records.
    """
    lines = "".join(json.dumps(record(r, url, **save), default=str) + "\n" for r, save in results)
    problems = []
    for path in candidate_paths(url):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, lines.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            return path
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
    raise OSError("no writable place for a recovery file (" + "; ".join(problems) + ")")


def store_or_keep(store: Store, result: RunResult, **save: Any) -> int:
    """Store ``result``; if storage fails, append it to a recovery file (:func:`write`) and raise
    a one-line ``DatabaseError`` that says where it is and how to store it later."""
    try:
        return store.save_run(result, **save)
    except DatabaseError as exc:
        try:
            path = write([(result, save)], store.url)
        except OSError as why:
            raise DatabaseError(f"{exc}; the result could not be kept either: {why}") from None
        raise DatabaseError(f"{exc}; the result is kept in {path}: store it with `ngbench db recover {path}`") from None


def load(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a recovery file (``ConfigError`` for a file that is not one)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read recovery file {p}: {exc.strerror or exc}") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}:{number}: not a recovery record ({exc.msg})") from None
        if not isinstance(rec, dict) or rec.get("format") != FORMAT or rec.get("kind") != "run":
            raise ConfigError(f"{p}:{number}: not an ngbench recovery record")
        if rec.get("version") != VERSION:
            raise ConfigError(
                f"{p}:{number}: recovery format version {rec.get('version')} (this ngbench reads {VERSION})"
            )
        records.append(rec)
    return records


@dataclass
class Recovered:
    """What :func:`recover` did: records read, runs stored, records already stored before."""

    records: int = 0
    stored: int = 0
    already: int = 0
    detached: int = 0


def recover(store: Store, path: str | os.PathLike[str]) -> Recovered:
    """Store every record of the recovery file at ``path`` that is not stored yet."""
    records = load(path)
    out = Recovered(records=len(records))
    for rec in records:
        try:
            result = RunResult.from_dict(rec["result"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: a record does not describe a run ({exc})") from None
        save = dict(rec.get("save") or {})
        if save.get("sweep_id") is not None and not store.sweep_exists(int(save["sweep_id"])):
            save["sweep_id"] = None  # recovered into another database: the run stands alone
            out.detached += 1
        _, stored = store.save_run_unless_stored(result, **save)
        out.stored += int(stored)
        out.already += int(not stored)
    return out
