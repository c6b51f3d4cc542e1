"""Input is checked up front, the same on SQLite and PostgreSQL, with every problem at once.

Reproduces the input faults of the storage fault pass: a 300-character tag trained and then
failed on PostgreSQL (``VARCHAR(255)``), ``--set lr=inf`` was stored as null, ``--device
cuda:7`` on a host without that GPU was stored as an ``error`` run, and a sweep file with a bad
backend hid its unknown names. Also the Ray driver's cluster token and the site's handling of
Unicode bidirectional controls in user text.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import harness.commands.runs as runs_cmd
import harness.devices
from backends.spec import HyperparameterError, hparam, resolve_hparams
from db.limits import TEXT_LIMITS
from db.store import open_store
from harness import api
from harness.cli import main
from harness.errors import ConfigError
from harness.executors import ray_executor
from harness.executors.ray_executor import RayExecutor, hidden_from_ray
from harness.plans import load
from harness.worker import worker_environ

RUN = ("run", "tiny-ce", "sgd", "--steps", "2", "--device", "cpu")


def ngbench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def stored_tags(url: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("runs"):
                return []
            return [r[0] for r in conn.execute(sa.text("SELECT tag FROM runs ORDER BY id"))]
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind (PostgreSQL: the throwaway test cluster)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'limits.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_a_tag_longer_than_the_column_is_refused_before_training_on_both_databases(
    any_db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = TEXT_LIMITS["tag"]
    assert limit == 255
    trained: list[Any] = []
    real_execute = runs_cmd.execute
    monkeypatch.setattr(runs_cmd, "execute", lambda spec, **kw: trained.append(spec) or real_execute(spec, **kw))

    code, _, err = ngbench(capsys, *RUN, "--db", any_db, "--tag", "x" * 300)
    assert code == 2 and trained == []
    assert err == f"ngbench: error: tag is 300 characters long; at most {limit} can be stored\n"
    code, _, err = ngbench(capsys, *RUN, "--db", any_db, "--tag", "bad\x00tag")
    assert code == 2 and trained == [] and "control characters (U+0000)" in err

    # Exactly the limit trains and is stored, byte for byte, on both databases.
    code, _, err = ngbench(capsys, *RUN, "--db", any_db, "--tag", "y" * limit)
    assert code == 0, err
    assert len(trained) == 1 and stored_tags(any_db) == ["y" * limit]


def test_a_sweep_file_with_a_long_tag_or_a_huge_seed_is_refused(tmp_path: Path) -> None:
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        f'name = "{"n" * 256}"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\n'
        f'tag = "{"t" * 300}"\nseeds = [0, 3000000000]\n'
    )
    with pytest.raises(ConfigError) as info:
        load(sweep)
    msg = str(info.value)
    assert "(3 problems)" in msg
    assert "sweep name is 256 characters long; at most 255" in msg
    assert "tag is 300 characters long; at most 255" in msg
    assert "seeds must be at most 2147483647" in msg


def test_every_problem_of_a_sweep_file_is_reported_at_once(tmp_path: Path) -> None:
    sweep = tmp_path / "bad.toml"
    sweep.write_text(
        'name = "bad"\nsuites = ["tiny-ce", "nosuch-suite"]\noptimizers = ["sgd", "nosuchopt", "adamww"]\n'
        'backends = ["torch", "jaxx"]\n'
    )
    with pytest.raises(ConfigError) as info:
        load(sweep)
    msg = str(info.value)
    assert "(4 problems)" in msg
    assert "unknown backend 'jaxx'; did you mean jax?" in msg
    assert "unknown suite 'nosuch-suite'" in msg
    assert "unknown optimizer 'nosuchopt'" in msg
    assert "unknown optimizer 'adamww'; did you mean adamw" in msg


@pytest.mark.parametrize("value", ["inf", "-inf", "1e400", "nan"])
def test_a_non_finite_hyperparameter_is_refused_up_front(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = ngbench(capsys, *RUN, "--db", str(tmp_path / "x.db"), "--set", f"lr={value}")
    assert code == 2 and err.count("\n") == 1
    assert ("must be finite" in err) if value != "nan" else ("got NaN" in err)
    assert not (tmp_path / "x.db").exists()  # refused before the database is even opened


def test_calibrate_refuses_a_non_finite_grid_before_its_first_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = ngbench(capsys, "calibrate", "tiny-ce", "--lrs", "0.1,inf", "--seeds", "1", "--steps", "2")
    assert code == 2 and err == "ngbench: error: --lrs expects finite numbers, got inf\n"


def test_a_card_may_allow_an_infinite_value() -> None:
    @dataclasses.dataclass(frozen=True)
    class Card:
        clip: float = hparam(float("inf"), doc="gradient clipping norm", low=0, allow_infinite=True)
        lr: float = hparam(0.1, doc="learning rate", low=0)

    assert resolve_hparams(Card, {"clip": "inf"}).clip == float("inf")
    with pytest.raises(HyperparameterError, match="lr must be finite, got inf"):
        resolve_hparams(Card, {"lr": "inf"})


def test_a_gpu_the_host_does_not_have_is_refused_before_a_run_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness.devices, "visible_gpu_count", lambda: 0)
    db = tmp_path / "gpu.db"
    with pytest.raises(ConfigError, match="--device cuda:7: 0 GPU"):
        api.run("tiny-ce", "sgd", steps=2, device="cuda:7", db=str(db))
    assert stored_tags(f"sqlite:///{db}") == []
    code, _, err = ngbench(capsys, "run", "tiny-ce", "sgd", "--steps", "2", "--device", "cuda:7", "--db", str(db))
    assert code == 2 and err == "ngbench: error: --device cuda:7: 0 GPU(s) visible; use --device cpu\n"
    assert stored_tags(f"sqlite:///{db}") == []


# --------------------------------------------------------------------------- Ray credentials

SECRETS = {
    "NGBENCH_DB_URL": "postgresql+psycopg://u:hunter2@db.example/ngbench",
    "PGPASSWORD": "hunter2",
    "GITHUB_TOKEN": "ghp_not_for_workers",
}
RAY_CREDENTIALS = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "ray-cluster-token", "RAY_AUTH_TOKEN_PATH": "/p/t"}


def test_the_ray_driver_keeps_its_cluster_token_and_hides_database_credentials() -> None:
    env = {"PATH": "/usr/bin", **SECRETS, **RAY_CREDENTIALS}
    assert hidden_from_ray(env) == SECRETS


def test_ray_init_sees_the_token_and_the_runs_see_neither(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {**SECRETS, **RAY_CREDENTIALS}.items():
        monkeypatch.setenv(k, v)
    seen: dict[str, str] = {}

    class Stop(Exception):
        pass

    def init(**_: Any) -> None:
        seen.update(os.environ)
        raise Stop  # joining stops here: what matters is the environment ray.init saw

    fake_ray = types.SimpleNamespace(is_initialized=lambda: False, init=init)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    with pytest.raises(ConfigError, match="cannot start or join Ray"):
        RayExecutor(ray_address="ray://head:10001").start()
    assert {k: seen.get(k) for k in RAY_CREDENTIALS} == RAY_CREDENTIALS
    assert not set(SECRETS) & set(seen)
    assert {k: os.environ[k] for k in SECRETS} == SECRETS  # the driver's own environment is restored
    run_env = worker_environ()
    assert not (set(SECRETS) | {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}) & set(run_env)
    assert frozenset(RAY_CREDENTIALS) == ray_executor.RAY_CLUSTER_CREDENTIALS


# --------------------------------------------------------------------------- the site

RLO = "\u202e"


def test_a_right_to_left_override_in_user_text_is_written_out_on_every_page(tmp_path: Path) -> None:
    from leaderboard.site import build
    from tests.test_site_build import result

    store = open_store(tmp_path / "bidi.db")
    sweep = store.create_sweep(f"sweep {RLO}gnp.exe", tag=f"tag{RLO}abc")
    for seed in range(2):
        store.save_run(result("tiny-ce", "sgd", seed, ttt=1.0 + seed, tag=f"evil{RLO}txt.exe"), sweep_id=sweep)
        store.save_run(result("tiny-ce", "adamw", seed, ttt=2.0 + seed, tag="x\u2066y\u2069"), sweep_id=sweep)
    build(store, tmp_path / "site", jobs=1)
    store.dispose()
    pages = [*(tmp_path / "site").rglob("*.html"), *(tmp_path / "site").rglob("*.svg")]
    assert len(pages) > 5
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for control in ("\u202e", "\u2066", "\u2069", "\u202a", "\u200f"):
            assert control not in text, f"U+{ord(control):04X} raw in {page.name}"
    shown = [p for p in pages if "evil[U+202E]txt.exe" in p.read_text(encoding="utf-8")]
    assert {p.parent.name for p in shown} >= {"runs", "suites"}
    assert any("x[U+2066]y[U+2069]" in p.read_text(encoding="utf-8") for p in pages)
