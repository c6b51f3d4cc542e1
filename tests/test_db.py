"""Storage: migrations from empty, run round trip (SQLite and a real PostgreSQL), masking."""

from __future__ import annotations

import math

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from db.engine import connect, current_revision, head_revision, masked, resolve_url
from db.models import Base
from db.queries import approx_frame, environments_frame, metrics_frame, runs_frame, sweeps_frame
from db.store import open_store
from harness.errors import DatabaseError
from harness.runner import RunResult, RunSpec, execute

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module")
def result() -> RunResult:
    r = execute(RunSpec("tiny-ce", "sgd", steps=25, device="cpu", tag="<b>tag</b> 'quoted'", hparams={"lr": 0.001}))
    assert r.status == "budget_exhausted"
    return r


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_db: str) -> str:
    if request.param == "sqlite":
        return tmp_db
    return request.getfixturevalue("pg_url")


def test_migrations_from_empty_match_the_models(url: str) -> None:
    engine, _ = connect(url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == []
    assert {"environments", "sweeps", "runs", "metrics", "approx_quality", "alembic_version"} <= tables
    engine.dispose()
    # Opening again is a no-op.
    engine, _ = connect(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_run_round_trip(url: str, result: RunResult) -> None:
    store = open_store(url)
    sweep = store.create_sweep("s", spec={"x": 1})
    run_id = store.save_run(result, sweep_id=sweep)
    store.save_run(result)  # same environment: one environment row
    frame = runs_frame(store)
    assert list(frame.id) == [run_id, run_id + 1]
    row = frame.iloc[0]
    assert (row.suite, row.optimizer, row.backend, row.seed, row.status, row.tag) == (
        "tiny-ce",
        "sgd",
        "torch",
        0,
        "budget_exhausted",
        "<b>tag</b> 'quoted'",
    )
    assert row.sweep_id == sweep and row.key == result.key and row.steps == 25
    assert row.hparams == result.hparams
    assert math.isclose(row.final_train_loss, result.final_train_loss, rel_tol=1e-12)
    assert math.isclose(row.step_time_median_s, result.step_time_median_s, rel_tol=1e-12)
    assert row.passes_per_step == result.passes_per_step
    assert row.peak_memory_bytes == result.peak_memory_bytes
    assert len(environments_frame(store)) == 1
    metrics = metrics_frame(store, [run_id])
    assert len(metrics) == len(result.metrics)
    stored = sorted(zip(metrics.step, metrics.name, metrics.value))
    expected = sorted((s, n, v) for s, _, n, v in result.metrics)
    assert [(s, n) for s, n, _ in stored] == [(s, n) for s, n, _ in expected]
    assert [v for *_, v in stored] == pytest.approx([v for *_, v in expected], rel=1e-12)
    assert store.finished_keys() == {result.key}
    assert sweeps_frame(store).iloc[0]["spec"] == {"x": 1}
    assert approx_frame(store).empty
    store.dispose()


def test_non_finite_values_are_stored_as_null(url: str, result: RunResult) -> None:
    store = open_store(url)
    bad = RunResult.from_dict(result.to_dict())
    bad.status, bad.final_train_loss = "diverged", math.nan
    bad.metrics = [(1, 0.1, "train_loss_batch", math.inf), (2, 0.2, "train_loss_batch", math.nan)]
    run_id = store.save_run(bad)
    assert runs_frame(store).iloc[0].final_train_loss is None or math.isnan(runs_frame(store).iloc[0].final_train_loss)
    values = metrics_frame(store, [run_id]).value
    assert values.isna().all()
    store.dispose()


def test_a_run_is_written_in_one_transaction(tmp_db: str, result: RunResult) -> None:
    """A failure while writing metric rows leaves no run row behind."""
    store = open_store(tmp_db)
    broken = RunResult.from_dict(result.to_dict())
    broken.metrics = [(0, 0.0, None, 1.0)]  # name is NOT NULL: the insert fails after the run row
    with pytest.raises(DatabaseError):
        store.save_run(broken)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 0
    store.dispose()


def test_urls_and_masking(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NGBENCH_DB_URL", raising=False)
    assert resolve_url(None) == f"sqlite:///{tmp_path / 'ngbench.db'}"
    monkeypatch.setenv("NGBENCH_DB_URL", "postgresql+psycopg://u:pw@h/db")
    assert resolve_url(None) == "postgresql+psycopg://u:pw@h/db"
    assert masked("postgresql+psycopg://u:pw@h:5/db") == "postgresql+psycopg://u:***@h:5/db"
    assert "pw" not in masked("postgresql+psycopg://u:pw@h/db")


def test_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(DatabaseError, match=r"cannot reach database postgresql\+psycopg://u:\*\*\*@127.0.0.1:9/x"):
        open_store("postgresql+psycopg://u:secret@127.0.0.1:9/x")
    with pytest.raises(DatabaseError, match="does not exist"):
        open_store("/nonexistent-dir/ngbench.db")


SECRET = "hunter2"
URL_FORMS = [
    (f"postgresql+psycopg://u:{SECRET}@h:5/db", "postgresql+psycopg://u:***@h:5/db"),
    (f"postgresql+psycopg://u@h/db?password={SECRET}", "postgresql+psycopg://u@h/db?password=***"),
    (
        f"postgresql+psycopg://u@h/db?sslmode=require&sslpassword={SECRET}",
        "postgresql+psycopg://u@h/db?sslmode=require&sslpassword=***",
    ),
    (
        f"postgresql+psycopg://u@h/db?PASSWORD={SECRET}&application_name=x",
        "postgresql+psycopg://u@h/db?PASSWORD=***&application_name=x",
    ),
    (f"postgresql+psycopg://u:{SECRET}@h/db?password={SECRET}", "postgresql+psycopg://u:***@h/db?password=***"),
    (f"postgresql://u:{SECRET}@h:notaport/db", "postgresql://u:***@h:notaport/db"),
    (f"postgresql://u:{SECRET}@h:notaport/db?auth_token={SECRET}", "postgresql://u:***@h:notaport/db?auth_token=***"),
    ("sqlite:////tmp/ngbench.db", "sqlite:////tmp/ngbench.db"),
    # A passfile is a path, not a secret (its contents are never read into output).
    (
        "postgresql+psycopg://u@h/db?passfile=/home/u/.pgpass",
        "postgresql+psycopg://u@h/db?passfile=%2Fhome%2Fu%2F.pgpass",
    ),
]


@pytest.mark.parametrize(("url", "shown"), URL_FORMS)
def test_every_url_form_is_masked(url: str, shown: str) -> None:
    assert masked(url) == shown
    assert SECRET not in masked(url)


def test_connection_errors_never_carry_the_secret() -> None:
    from db.errors import DatabaseError

    for url in (
        f"postgresql+psycopg://u@127.0.0.1:9/db?password={SECRET}&connect_timeout=2",
        f"postgresql://u:{SECRET}@h:notaport/db",
    ):
        with pytest.raises(DatabaseError) as info:
            connect(url)
        message = str(info.value)
        assert SECRET not in message and len(message.splitlines()) == 1, message
