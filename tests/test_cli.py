"""The ``ngbench`` command line, end to end in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from db.engine import head_revision

NGBENCH = [sys.executable, "-m", "harness.cli"]


def ngbench(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "NGBENCH_DB_URL"}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return subprocess.run([*NGBENCH, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


def test_run_then_list_and_show(tmp_path: Path) -> None:
    out = ngbench(
        "run",
        "tiny-ce",
        "sgd",
        "--steps",
        "15",
        "--set",
        "lr=0.001",
        "--tag",
        "[bold]x[/bold]",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "budget_exhausted after 15 steps" in out.stdout
    assert "stored as run 1 in sqlite:///" in out.stdout and (tmp_path / "ngbench.db").exists()

    out = ngbench("run", "tiny-mse", "adamw", "--steps", "5", "--json", "--device", "cpu", cwd=tmp_path)
    summary = json.loads(out.stdout)
    assert summary["run_id"] == 2 and summary["status"] == "budget_exhausted" and summary["steps"] == 5
    assert summary["passes_per_step"]["backward"] == 1.0

    out = ngbench("runs", cwd=tmp_path)
    assert out.returncode == 0
    assert "tiny-ce" in out.stdout and "tiny-mse" in out.stdout
    assert "[bold]x[/bold]" in out.stdout  # user text is printed literally, never as markup

    out = ngbench("runs", "--csv", "--optimizer", "adamw", cwd=tmp_path)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("id,suite,optimizer") and len(lines) == 2

    out = ngbench("show", "1", "--json", cwd=tmp_path)
    row = json.loads(out.stdout)
    assert row["hparams"]["lr"] == 0.001 and row["environment"]["device_kind"] == "cpu"
    assert row["metric_series"]["val_accuracy"]["last_step"] == 15

    out = ngbench("db", "current", "--check", cwd=tmp_path)
    assert out.returncode == 0 and f"revision {head_revision()} (newest {head_revision()})" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "tiny-cee", "sgd"], "unknown suite 'tiny-cee'; did you mean tiny-ce"),
        (["run", "tiny-ce", "sgdd"], "unknown optimizer 'sgdd' for backend 'torch'; did you mean sgd"),
        (["run", "tiny-ce", "sgd", "--set", "lr=-1"], "sgd: lr must be > 0, got -1"),
        (["run", "tiny-ce", "sgd", "--set", "lr=fast"], "sgd: lr must be a number, got 'fast'"),
        (["run", "tiny-ce", "sgd", "--set", "momentum"], "--set expects key=value"),
        (["run", "tiny-ce", "sgd", "--set", "lrr=1"], "unknown hyperparameter 'lrr'"),
        (["run", "tiny-ce", "sgd", "--backend", "tf"], "unknown backend 'tf'"),
        (["run", "tiny-ce", "sgd", "--dtype", "float16"], "unknown dtype 'float16'"),
        (["run", "tiny-ce", "nomodule:Thing"], "cannot import adapter module 'nomodule'"),
        (["list", "things"], "cannot list 'things'"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    out = ngbench(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == f"ngbench: error: {out.stderr.strip().removeprefix('ngbench: error: ')}"
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "ngbench.db").exists()


def test_unreachable_database(tmp_path: Path) -> None:
    out = ngbench(
        "run", "tiny-ce", "sgd", "--steps", "2", "--db", "postgresql+psycopg://bench:s3cret@127.0.0.1:9/x", cwd=tmp_path
    )
    assert out.returncode == 2
    assert "cannot reach database postgresql+psycopg://bench:***@127.0.0.1:9/x" in out.stderr
    assert "s3cret" not in out.stderr + out.stdout
    assert len(out.stderr.strip().splitlines()) == 1

    out = ngbench("runs", env={"NGBENCH_DB_URL": str(tmp_path / "missing" / "x.db")}, cwd=tmp_path)
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_show_unknown_run(tmp_path: Path) -> None:
    ngbench("db", "upgrade", cwd=tmp_path)
    out = ngbench("show", "42", cwd=tmp_path)
    assert out.returncode == 2 and "no run with id 42" in out.stderr


def test_usage_errors_exit_non_zero(tmp_path: Path) -> None:
    out = ngbench("run", "tiny-ce", cwd=tmp_path)
    assert out.returncode == 2 and "Missing argument" in out.stderr
    out = ngbench("--help", cwd=tmp_path)
    assert out.returncode == 0 and "run" in out.stdout


def test_list(tmp_path: Path) -> None:
    out = ngbench("list", "suites", cwd=tmp_path)
    assert out.returncode == 0 and "digits-mlp" in out.stdout and "diabetes-mlp" in out.stdout
    out = ngbench("list", "optimizers", "--backend", "torch", cwd=tmp_path)
    assert out.returncode == 0 and "adamw" in out.stdout and "sgd" in out.stdout
