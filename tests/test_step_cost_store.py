"""Stored step-cost tables: the round trip through the database (SQLite and PostgreSQL), the
benchmark's ``--store``, and the optimizer pages that show the newest row, escaped."""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks import step_cost
from db.step_costs import latest_step_costs, save_step_costs
from db.store import open_store
from leaderboard.site import build
from tests.test_site_build import SCRIPT_TAG, result

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def cost(adapter: str, median_s: float, *, backend: str = "torch", problem: str = "digits-mlp", **kw: object) -> dict:
    floor_s = kw.pop("floor_s", 0.434e-3)
    return {
        "backend": backend,
        "problem": problem,
        "adapter": adapter,
        "params": 26122,
        "median_s": median_s,
        "p10_s": median_s * 0.9,
        "p90_s": median_s * 1.2,
        "compile_s": 0.2,
        "ratio_to_sgd": median_s / 0.624e-3,
        "passes": {"forward": 1.2, "backward": 1.1, "jvp": 0.2, "vjp": 0.0, "per_sample": 0.0},
        "status": "ok",
        "floor_s": floor_s,
        "efficiency": median_s / floor_s if floor_s == floor_s else math.nan,
        **kw,
    }


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_db: str) -> str:
    if request.param == "sqlite":
        return tmp_db
    return request.getfixturevalue("pg_url")


def test_a_stored_table_round_trips_and_the_newest_row_wins(url: str) -> None:
    store = open_store(url)
    first = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    old = [cost("sgd", 0.7e-3), cost("kfac", 3.0e-3)]
    assert save_step_costs(store, old, machine="m1", threads=1, git_commit="a" * 40, measured_at=first) == 2
    new = [cost("kfac", 2.5e-3, floor_s=math.nan), cost("kfac:amortised", 0.9e-3, backend="jax")]
    save_step_costs(store, new, machine="m2", threads=None, git_commit="b" * 40, git_dirty=True, rounds=60)
    frame = latest_step_costs(store)
    store.dispose()
    rows = {(r["backend"], r["adapter"]): r for r in frame.to_dict("records")}
    assert sorted(rows) == [("jax", "kfac:amortised"), ("torch", "kfac"), ("torch", "sgd")]
    kfac = rows[("torch", "kfac")]
    assert kfac["median_step_s"] == pytest.approx(2.5e-3) and kfac["machine"] == "m2"
    assert kfac["floor_s"] is None or math.isnan(kfac["floor_s"])  # NaN is stored as NULL
    assert kfac["passes"] == {"forward": 1.2, "backward": 1.1, "jvp": 0.2, "vjp": 0.0, "per_sample": 0.0}
    assert kfac["git_dirty"] and kfac["rounds"] == 60
    sgd = rows[("torch", "sgd")]
    assert sgd["threads"] == 1 and sgd["git_commit"] == "a" * 40
    assert sgd["efficiency"] == pytest.approx(0.7 / 0.434)
    got = sgd["measured_at"]
    assert (got if got.tzinfo else got.replace(tzinfo=UTC)) == first  # SQLite reads it back naive (UTC)
    store = open_store(url)
    assert latest_step_costs(store, adapters=["sgd"])["adapter"].tolist() == ["sgd"]
    store.dispose()


def test_store_table_records_the_machine_threads_and_commit(tmp_db: str) -> None:
    costs = [step_cost.Cost(**cost("sgd", 0.6e-3)), step_cost.Cost(**cost("kfac", 2.6e-3))]
    assert step_cost.store_table(tmp_db, costs, ["torch"], threads=1, rounds=100) == 2
    row = latest_step_costs(open_store(tmp_db), adapters=["kfac"]).iloc[0]
    assert row["threads"] == 1 and row["rounds"] == 100
    assert "1 thread(s)" in row["machine"] and "torch" in row["machine"]
    assert row["git_commit"] is None or len(row["git_commit"]) == 40


def test_store_flag_refuses_an_unusable_database_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "missing-dir" / "x.db"
    monkeypatch.setattr(sys, "argv", ["step_cost", "--backend", "torch", "--store", str(bad)])
    monkeypatch.setattr(step_cost, "measure", lambda *a, **k: pytest.fail("measured before the store check"))
    with pytest.raises(SystemExit) as exc:
        step_cost.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ngbench: error:") and "\n" not in err


def test_optimizer_pages_show_the_newest_step_cost_escaped_or_not_measured(tmp_db: str, tmp_path: Path) -> None:
    store = open_store(tmp_db)
    for optimizer in ("sgd", "kfac", "adamw"):
        store.save_run(result("tiny-ce", optimizer, 0, ttt=0.05))
    when = datetime(2026, 12, 3, 13, 5, tzinfo=UTC)
    rows = [cost("sgd", 0.624e-3), cost("kfac", 2.661e-3, floor_s=1.822e-3), cost("kfac:amortised", 0.9e-3)]
    rows[1]["passes"] = {
        **rows[1]["passes"],
        "algebra_s": 0.55e-3,
        "efficiency_algebra": 2.661 / (1.822 + 0.55),
        "algebra_after_pass_s": 0.7e-3,
        "efficiency_after_pass": 2.661 / (1.822 + 0.7),
    }
    rows.append(cost("kfac", math.nan, backend="jax", status="RuntimeError: <b>x</b>"))
    save_step_costs(
        store, rows, machine=f"host {SCRIPT_TAG}", threads=1, git_commit="0123456789abcdef", measured_at=when
    )
    build(store, tmp_path / "site", jobs=1)
    store.dispose()
    page = (tmp_path / "site" / "optimizers" / "kfac.html").read_text(encoding="utf-8")
    section = page[page.index('id="step-cost"') :]
    assert "2.66 ms" in section and "1.82 ms" in section and "1.46×" in section  # step, floor, efficiency
    assert "4.26×" in section  # ratio to SGD
    assert "550 µs" in section and "1.12×" in section  # the linear algebra, step / (floor + algebra)
    assert "700 µs" in section and "1.06×" in section  # the same after a pass
    for key in ("algebra_s", "efficiency_algebra", "algebra_after_pass_s", "efficiency_after_pass"):
        assert key not in section  # not shown as pass counts
    assert "amortised" in section and "defaults" in section
    assert "2026-12-03 13:05 UTC" in section and "0123456789" in section
    assert SCRIPT_TAG not in page and "host &lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "failed: RuntimeError: &lt;b&gt;x&lt;/b&gt;" in section and "<b>x</b>" not in page
    adamw = (tmp_path / "site" / "optimizers" / "adamw.html").read_text(encoding="utf-8")
    assert "Step cost: not measured" in adamw


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--adapter", "nope"], "unknown adapter 'nope' on torch"),
        (["--adapter", "kfac:nope"], "unknown preset 'nope'"),
        (["--problem", "nope"], "unknown problem 'nope'"),
    ],
)
def test_bad_names_are_one_line_before_measuring(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["step_cost", "--backend", "torch", *args])
    monkeypatch.setattr(step_cost, "measure", lambda *a, **k: pytest.fail("measured a bad name"))
    with pytest.raises(SystemExit) as exc:
        step_cost.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ngbench: error:") and message in err and "\n" not in err
