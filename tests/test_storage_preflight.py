"""Storage is checked before the work, and nothing computed is thrown away.

Each test reproduces a fault of the storage fault pass: a read-only, locked or damaged
database must be refused before the first step (one line, exit 2), ``runs`` on a damaged file
prints one line, and a run whose storage fails after training is kept in a recovery file that
``ngbench db recover`` stores exactly once.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import db.checks as db_checks
import db.errors as db_errors
import harness.commands.runs as runs_cmd
from db.errors import DatabaseError, explain
from db.store import Store, open_store
from harness import recovery
from harness.cli import main
from harness.orchestrator import run_sweep
from harness.plans import expand
from harness.runner import RunResult, RunSpec
from harness.sweep import load_config
from tests.sweep_helpers import InlineExecutor


def ngbench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process: ``(exit status, stdout, stderr)``."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every call of the run command's training; the tests assert there is none."""
    calls: list[Any] = []

    def must_not_train(spec: Any, **_: Any) -> Any:
        calls.append(spec)
        raise AssertionError("trained although storage is unusable")

    monkeypatch.setattr(runs_cmd, "execute", must_not_train)
    return calls


def fake_result(seed: int = 0, *, points: int = 50, status: str = "budget_exhausted") -> RunResult:
    spec = RunSpec(suite="tiny-ce", optimizer="sgd", seed=seed, steps=points, tag="t")
    return RunResult(
        spec=spec,
        status=status,
        key=f"key-{seed}",
        suite_version=1,
        steps=points,
        initial_train_loss=1.2,
        final_train_loss=0.25 + seed,
        val_metric="val_accuracy",
        best_val_metric=0.75,
        metrics=[(i, i * 0.01, "train_loss", 1.0 / (i + 1)) for i in range(points)],
        environment={"fingerprint": "env-test", "device_kind": "cpu"},
        started_at="2026-12-03T10:00:00+00:00",
        finished_at="2026-12-03T10:00:05+00:00",
    )


def count(path: Path, sql: str) -> Any:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


def migrated(path: Path, results: int = 0) -> Path:
    store = open_store(path)
    for seed in range(results):
        store.save_run(fake_result(seed))
    store.dispose()
    return path


RUN = ("run", "tiny-ce", "sgd", "--steps", "3", "--device", "cpu")


# --------------------------------------------------------------------------- before the work


def test_a_read_only_database_is_refused_before_the_first_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: list[Any]
) -> None:
    db = migrated(tmp_path / "ro.db", results=1)
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    code, _, err = ngbench(capsys, *RUN, "--db", read_only)
    assert code == 2 and no_training == []
    assert err.count("\n") == 1 and err.startswith("ngbench: error: cannot write to database")
    assert "readonly" in err
    assert count(db, "SELECT COUNT(*) FROM runs") == 1 and count(db, "SELECT COUNT(*) FROM sweeps") == 0


def test_a_sweep_on_a_read_only_database_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = migrated(tmp_path / "ro.db")
    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "ro"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nsteps = 2\n')
    code, _, err = ngbench(capsys, "sweep", str(sweep), "--db", f"sqlite:///file:{db}?mode=ro&uri=true")
    assert code == 2 and err.count("\n") == 1 and "cannot write to database" in err
    assert count(db, "SELECT COUNT(*) FROM sweeps") == 0


def test_a_locked_database_is_refused_before_the_first_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = migrated(tmp_path / "locked.db")
    monkeypatch.setattr(db_checks, "LOCK_WAIT_S", 0.3)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock, held indefinitely
    try:
        code, _, err = ngbench(capsys, *RUN, "--db", str(db))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2 and no_training == []
    assert err.count("\n") == 1 and "database is locked" in err and "another process holds a write lock" in err


def damage(path: Path, table: str = "runs") -> None:
    """Overwrite the root page of ``table`` with garbage (the file stays a SQLite database)."""
    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


def test_runs_on_a_half_corrupted_database_prints_one_line_and_run_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: list[Any]
) -> None:
    db = migrated(tmp_path / "damaged.db", results=3)
    damage(db)
    code, out, err = ngbench(capsys, "runs", "--db", str(db))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("ngbench: error: storage failed: database disk image is malformed")
    code, _, err = ngbench(capsys, *RUN, "--db", str(db))
    assert code == 2 and no_training == [] and err.count("\n") == 1
    assert "is damaged" in err and "malformed" in err


def test_damage_in_the_series_tables_is_found_without_reading_them_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: list[Any]
) -> None:
    db = migrated(tmp_path / "damaged-metrics.db", results=3)
    damage(db, "metrics")
    code, _, err = ngbench(capsys, *RUN, "--db", str(db))
    assert code == 2 and no_training == [] and err.count("\n") == 1
    assert "is damaged" in err and "malformed" in err


def test_unwritable_places_are_named_in_the_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    (tmp_path / "sub").mkdir()
    monkeypatch.setattr(db_errors, "_read_only_mount", lambda path: True)
    assert explain("unable to open database file", url) == (
        f"{tmp_path / 'sub'} is on a read-only file system (SQLite writes its journal next to the database)"
    )
    monkeypatch.setattr(db_errors, "_read_only_mount", lambda path: False)
    monkeypatch.setattr(db_errors.os, "access", lambda path, mode: False)
    assert "the directory" in explain("unable to open database file", url)
    assert "not writable" in explain("unable to open database file", url)
    (tmp_path / "sub" / "x.db").write_bytes(b"")
    assert explain("attempt to write a readonly database", url) == (
        f"the database file {tmp_path / 'sub' / 'x.db'} is read-only (make it writable or pass another --db)"
    )


def test_a_schema_newer_than_this_ngbench_is_refused(tmp_path: Path) -> None:
    db = migrated(tmp_path / "new.db")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(DatabaseError, match="newer than this ngbench knows"):
        open_store(db, writable=True)


def test_the_write_check_leaves_nothing_behind(tmp_path: Path) -> None:
    db = migrated(tmp_path / "ok.db")
    for _ in range(3):
        open_store(db, writable=True).dispose()
    assert count(db, "SELECT COUNT(*) FROM sweeps") == 0


# --------------------------------------------------------------------------- after the work


def test_a_run_whose_storage_fails_is_kept_and_recovered_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = migrated(tmp_path / "r.db")

    def disk_full(self: Store, result: Any, **_: Any) -> int:
        raise DatabaseError(f"could not store the run in {self.display_url}: database or disk is full")

    with monkeypatch.context() as m:
        m.setattr(Store, "save_run", disk_full)
        code, _, err = ngbench(capsys, *RUN, "--db", str(db), "--tag", "kept")
    kept = tmp_path / "r.db.recovery.jsonl"
    assert code == 2 and err.count("\n") == 1
    assert "database or disk is full" in err and f"the result is kept in {kept}" in err
    assert f"ngbench db recover {kept}" in err
    assert count(db, "SELECT COUNT(*) FROM runs") == 0
    record = json.loads(kept.read_text().splitlines()[0])
    assert record["format"] == "ngbench-recovery" and record["result"]["steps"] == 3

    code, out, _ = ngbench(capsys, "db", "recover", str(kept), "--db", str(db))
    assert code == 0 and "stored 1, already stored 0" in out
    code, out, _ = ngbench(capsys, "db", "recover", str(kept), "--db", str(db))
    assert code == 0 and "stored 0, already stored 1" in out
    assert count(db, "SELECT COUNT(*) FROM runs") == 1
    assert count(db, "SELECT tag FROM runs") == "kept"
    assert count(db, "SELECT final_train_loss FROM runs") == pytest.approx(record["result"]["final_train_loss"])
    assert count(db, "SELECT COUNT(*) FROM metrics") == len(record["result"]["metrics"]) > 0


def test_a_sweep_keeps_every_result_the_database_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "s.db"
    store = open_store(db, writable=True)
    config = load_config({"name": "kept", "suites": ["tiny-ce"], "optimizers": ["sgd"], "seeds": [0, 1], "steps": 2})
    plan = expand(config)
    monkeypatch.setattr("harness.orchestrator.STORE_ATTEMPTS", 1)

    def gone(*_: Any, **__: Any) -> Any:
        raise DatabaseError("could not store the run in sqlite:///x: disk I/O error")

    monkeypatch.setattr(Store, "save_run_once", gone)
    summary = run_sweep(plan, store, InlineExecutor())
    assert summary.recovered == 2 and summary.stored == 0 and summary.discarded == 0
    assert summary.recovery_file == str(tmp_path / "s.db.recovery.jsonl")
    monkeypatch.undo()
    done = recovery.recover(store, summary.recovery_file)
    assert (done.records, done.stored, done.already, done.detached) == (2, 2, 0, 0)
    assert count(db, f"SELECT COUNT(*) FROM runs WHERE sweep_id = {summary.sweep_id} AND role = 'run'") == 2
    store.dispose()


def test_a_file_that_is_not_a_recovery_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "x.jsonl"
    bogus.write_text('{"hello": 1}\n')
    code, _, err = ngbench(capsys, "db", "recover", str(bogus), "--db", str(tmp_path / "r.db"))
    assert code == 2 and err == f"ngbench: error: {bogus}:1: not an ngbench recovery record\n"


@pytest.mark.postgres
def test_a_read_only_or_locked_postgresql_database_is_refused_before_the_first_step(
    pg_url: str, capsys: pytest.CaptureFixture[str], no_training: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    open_store(pg_url).dispose()  # migrated, writable
    monkeypatch.setattr(db_checks, "LOCK_WAIT_S", 0.3)
    holder = sa.create_engine(pg_url)
    with holder.connect() as conn, conn.begin():
        conn.execute(sa.text("LOCK TABLE sweeps IN ACCESS EXCLUSIVE MODE"))  # another session's lock
        code, _, err = ngbench(capsys, *RUN, "--db", pg_url)
    assert code == 2 and no_training == [] and err.count("\n") == 1
    assert "lock timeout" in err and "another process holds a write lock" in err

    name = pg_url.rsplit("/", 1)[1]
    with holder.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    holder.dispose()
    code, _, err = ngbench(capsys, *RUN, "--db", pg_url)
    assert code == 2 and no_training == [] and err.count("\n") == 1
    assert "cannot write to database" in err and "read-only transaction" in err
